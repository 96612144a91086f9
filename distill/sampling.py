"""Batched ancestral sampling with the KV cache, recording the sampler's own distributions.

Generation dominates the cost of distillation data, so it runs once, in large batches:
n samples of ONE prompt share a batch (same length, no padding masks), the prompt is
prefilled in chunks of `CHUNK` tokens (two compiled shapes in all: (B, CHUNK) and (B, 1),
whatever the prompt lengths), and every decode step is one jitted call that samples the
next token and returns the top-k of the distribution it was drawn from. That top-k is
the teacher target of that position for free when the sampler is the teacher.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill.losses import Target, topk_target
from pspec_jax.models import arch
from pspec_jax.models.cache import init_cache
from pspec_jax.models.config import ModelConfig

F32 = jnp.float32
CHUNK = 16


@functools.partial(jax.jit, static_argnums=(0,))
def _feed(config: ModelConfig, params: Any, cache: Any, tokens: jax.Array):
    """Appends tokens (B, c) to the cache; the last position's logits (B, V)."""
    logits, cache = arch.forward(config, params, tokens, cache,
                                 logits_index=jnp.int32(tokens.shape[1] - 1))
    return logits[:, 0], cache


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _draw(config: ModelConfig, logits: jax.Array, key: jax.Array, step: jax.Array,
          k: int, temperature: float):
    """Samples from softmax(logits / T) (B, V); returns (tokens (B,), Target (B, k))."""
    del config
    z = logits.astype(F32) / F32(temperature)
    tok = jax.random.categorical(jax.random.fold_in(key, step), z, axis=-1).astype(jnp.int32)
    tgt = topk_target(logits, k, temperature=temperature)
    return tok, tgt


def prefill(config: ModelConfig, params: Any, prompts: np.ndarray, max_len: int):
    """(last logits (B, V), cache) after feeding `prompts` (B, T0) into a fresh cache."""
    B, T0 = prompts.shape
    cache = init_cache(config, B, max_len)
    toks = jnp.asarray(prompts, jnp.int32)
    logits = None
    pos = 0
    while T0 - pos >= CHUNK:
        logits, cache = _feed(config, params, cache, toks[:, pos:pos + CHUNK])
        pos += CHUNK
    while pos < T0:
        logits, cache = _feed(config, params, cache, toks[:, pos:pos + 1])
        pos += 1
    return logits, cache


def sample(config: ModelConfig, params: Any, prompt: list[int] | np.ndarray, n: int,
           new_tokens: int, key: jax.Array, *, temperature: float = 1.0, k: int = 64,
           max_len: int | None = None) -> tuple[np.ndarray, Target]:
    """`n` continuations of each prompt (prompts of one length share the batch).

    Args:
      config, params: the sampler (teacher or drafter).
      prompt: token ids (T0,) or (P, T0) for P prompts of the same length.
      n: samples per prompt (the batch is P·n, prompt-major).
      new_tokens: tokens to generate per sample.
      key: PRNG key; step s uses fold_in(key, s).
      temperature: sampling temperature (> 0).
      k: top-k size of the recorded distributions (≥ V: full rows).
      max_len: the cache size (default T0 + new_tokens); a fixed value across calls keeps
        one compiled decode step.
    Returns:
      tokens (P·n, T0 + new_tokens) int32 (prompt then samples) and the Target
      (P·n, new_tokens, k) of the distribution each sample was drawn from (numpy).
    """
    prompts = np.atleast_2d(np.asarray(prompt, np.int32))  # (P, T0)
    T0 = prompts.shape[1]
    rows = np.repeat(prompts, n, axis=0)  # (P·n, T0)
    max_len = max_len or T0 + new_tokens
    if T0 + new_tokens > max_len:
        raise ValueError(f"prompt {T0} + {new_tokens} new tokens exceed the cache {max_len}")
    logits, cache = prefill(config, params, rows, max_len)
    toks, idx, prob = [], [], []
    for s in range(new_tokens):
        tok, tgt = _draw(config, logits, key, jnp.int32(s), k, float(temperature))
        toks.append(tok)
        idx.append(tgt.idx)
        prob.append(tgt.prob)
        if s + 1 < new_tokens:
            logits, cache = _feed(config, params, cache, tok[:, None])
    gen = np.stack([np.asarray(t) for t in toks], axis=1)  # (P·n, new)
    out = np.concatenate([rows, gen], axis=1).astype(np.int32)
    return out, Target(np.stack([np.asarray(i) for i in idx], 1),
                       np.stack([np.asarray(p, np.float32) for p in prob], 1))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def score(config: ModelConfig, params: Any, tokens: jax.Array, k: int,
          temperature: float = 1.0) -> Target:
    """The model's top-k Target at every position of tokens (B, T) (one full forward)."""
    logits, _ = arch.forward(config, params, tokens)
    return topk_target(logits, k, temperature=temperature)
