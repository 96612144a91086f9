"""Next-token distributions and sampling (shared by plain, spec and the secure modes).

`Sampling` turns logits into the (processed) distribution that decoding targets:
temperature, then top-k, then top-p (Hugging Face order); temperature 0 is greedy,
i.e. the one-hot of the argmax (first index on ties). Every mode samples from, and
speculative decoding is exact with respect to, this processed distribution.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from pspec_jax.errors import UserError

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Frozen (a static jit argument). temperature 0 = greedy; top_k 0 / top_p 1 = off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0):
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise UserError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def probs(self, logits: jax.Array) -> jax.Array:
        """(..., V) logits -> (..., V) float32 probabilities of the processed law."""
        logits = logits.astype(F32)
        V = logits.shape[-1]
        if self.greedy:
            return jax.nn.one_hot(jnp.argmax(logits, axis=-1), V, dtype=F32)
        logits = logits / F32(self.temperature)
        if 0 < self.top_k < V:
            kth = jax.lax.top_k(logits, self.top_k)[0][..., -1:]  # (..., 1)
            logits = jnp.where(logits < kth, F32(-jnp.inf), logits)
        if self.top_p < 1.0:
            srt = jnp.sort(logits, axis=-1)[..., ::-1]  # descending
            ps = jax.nn.softmax(srt, axis=-1)
            before = jnp.cumsum(ps, axis=-1) - ps  # mass strictly before each sorted token
            n_keep = jnp.maximum(jnp.sum(before < F32(self.top_p), axis=-1, keepdims=True), 1)
            thresh = jnp.take_along_axis(srt, n_keep - 1, axis=-1)
            logits = jnp.where(logits < thresh, F32(-jnp.inf), logits)
        return jax.nn.softmax(logits, axis=-1)


def sample(key: jax.Array, probs: jax.Array) -> jax.Array:
    """One draw from each row of `probs` (..., V) -> int32 (...). Zero-probability
    entries are never drawn; a one-hot row returns its index."""
    return jax.random.categorical(key, jnp.log(probs), axis=-1).astype(jnp.int32)


def client_key(seed: int | None) -> jax.Array:
    """The base PRNG key of a client's run (threefry, folded per step by `step_key`).

    `seed` None (the default everywhere): 64 fresh bits from os.urandom, the whole key, so
    no one (the server included) can predict the client's draws. An explicit `seed`
    reproduces a run and is NOT private: whoever knows or guesses it predicts every draw.
    """
    if seed is None:
        return jnp.asarray(np.frombuffer(os.urandom(8), np.uint32))  # a raw threefry key
    return jax.random.PRNGKey(seed)


def secret_uniform(n: int) -> np.ndarray:
    """`n` draws of U[0, 1) straight from os.urandom (53 random bits each, float64): the
    client's secret thresholds in POST when the run is not seeded."""
    words = np.frombuffer(os.urandom(8 * n), np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


def step_key(base: jax.Array, step: jax.Array) -> jax.Array:
    """The key of decoding step `step`: folded from the run's base key (seed)."""
    return jax.random.fold_in(base, step)
