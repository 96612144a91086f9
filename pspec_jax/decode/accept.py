"""Accept/reject rules of speculative sampling, as pure functions (reused by POST).

Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative Decoding") and
Chen et al. 2023 ("Accelerating LLM Decoding with Speculative Sampling"): draft
x_i ~ q_i for i < γ; accept x_i with probability min(1, p_i(x_i) / q_i(x_i)), tested
without division as u_i · q_i(x_i) < p_i(x_i) with u_i ~ U[0, 1) (the form the secure
protocol uses); at the first rejection n sample from norm(max(0, p_n − q_n)); if all γ
pass, sample the bonus token from p_γ. The emitted tokens then follow p exactly.
With one-hot (greedy) p and q this accepts x_i iff it is p_i's argmax and the
correction token is p_n's argmax.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pspec_jax.decode.sampling import sample

F32 = jnp.float32


def accept_mask(u: jax.Array, p_x: jax.Array, q_x: jax.Array) -> jax.Array:
    """Per-draft acceptance flags: u·q(x) < p(x)  (prob. min(1, p/q) for u ~ U[0,1))."""
    return u * q_x < p_x


def first_rejection(accepted: jax.Array) -> jax.Array:
    """Number of leading accepted drafts (γ when all pass), int32."""
    return jnp.sum(jnp.cumprod(accepted.astype(jnp.int32))).astype(jnp.int32)


def residual(p_row: jax.Array, q_row: jax.Array) -> jax.Array:
    """norm(max(0, p − q)); falls back to p if the residual has no mass (p == q)."""
    r = jnp.maximum(p_row - q_row, F32(0.0))
    tot = jnp.sum(r)
    return jnp.where(tot > 0, r / jnp.where(tot > 0, tot, F32(1.0)), p_row)


def acceptance_alpha(p: jax.Array, q: jax.Array) -> jax.Array:
    """α_i = Σ_x min(p_i(x), q_i(x)) = 1 − TV(p_i, q_i) per draft row (γ,)."""
    return jnp.sum(jnp.minimum(p, q), axis=-1)


@dataclasses.dataclass(frozen=True)
class SpeculativeRule:
    """The exact rule (see the module docstring)."""

    def __call__(self, key: jax.Array, p: jax.Array, q: jax.Array,
                 drafts: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Args:
          key: PRNG key of this step's acceptance.
          p: (γ+1, V) target distributions at the γ+1 verified positions.
          q: (γ, V) draft distributions the drafts were sampled from.
          drafts: (γ,) int32 drafted tokens.
        Returns:
          (n, y): n int32 in [0, γ] accepted drafts, y the next token (correction or bonus).
        """
        g = drafts.shape[0]
        k_u, k_y = jax.random.split(key)
        u = jax.random.uniform(k_u, (g,), F32)
        idx = jnp.arange(g)
        n = first_rejection(accept_mask(u, p[idx, drafts], q[idx, drafts]))
        q_ext = jnp.concatenate([q, jnp.zeros_like(q[:1])], axis=0)  # row γ: zeros -> p_γ
        y = sample(k_y, residual(p[n], q_ext[n]))
        return n, y


@dataclasses.dataclass(frozen=True)
class AlwaysAccept:
    """NEGATIVE CONTROL ONLY: accepts every draft (emits the drafter's law). Tests use it
    to show the exactness test can fail."""

    def __call__(self, key, p, q, drafts):
        g = drafts.shape[0]
        return jnp.int32(g), sample(key, p[g])
