"""Plain decoding: the private model in the clear, one token per step, KV cache.

The loop state is a small pytree; `plain_step` is jitted once per (config, sampling,
cache rows) and reused for every step (see `common.TRACES`). Step t's key is
fold_in(client_key(seed), t): fresh from os.urandom unless a seed is given.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from pspec_jax.decode.common import (TRACES, GenerationResult, OnTokens, check_ids, plan_lengths,
                                     prefill, run_steps, token_buffer)
from pspec_jax.decode.sampling import Sampling, client_key, sample, step_key
from pspec_jax.models.arch import forward
from pspec_jax.models.cache import KVCache
from pspec_jax.models.config import ModelConfig


@struct.dataclass
class PlainState:
    """cache holds tokens[:, :length-1]; tokens[:, length-1] is the last, unfed token."""

    cache: KVCache
    tokens: jax.Array  # (B, N) int32: prompt then generated ids
    length: jax.Array  # int32 scalar
    step: jax.Array  # int32 scalar
    key: jax.Array  # base PRNG key of the run


def plain_step_fn(config: ModelConfig, sampling: Sampling, params: Any,
                  state: PlainState) -> tuple[PlainState, jax.Array]:
    """One decoding step (pure): feed the last token, sample the next. Returns (state, (B,) ids)."""
    TRACES["plain_step"] += 1
    B = state.tokens.shape[0]
    zero = jnp.int32(0)
    last = jax.lax.dynamic_slice(state.tokens, (zero, state.length - 1), (B, 1))  # (B, 1)
    logits, cache = forward(config, params, last, state.cache)  # (B, 1, V)
    probs = sampling.probs(logits[:, -1])  # (B, V)
    nxt = sample(step_key(state.key, state.step), probs)  # (B,)
    tokens = jax.lax.dynamic_update_slice(state.tokens, nxt[:, None], (zero, state.length))
    return state.replace(cache=cache, tokens=tokens, length=state.length + 1,
                         step=state.step + 1), nxt


plain_step = jax.jit(plain_step_fn, static_argnames=("config", "sampling"))


def init_plain_state(config: ModelConfig, params: Any, prompt_ids: list[int], rows: int,
                     seed: int | None | jax.Array, buffer: int | None = None) -> PlainState:
    cache = prefill(config, params, prompt_ids[:-1], rows)
    key = seed if isinstance(seed, jax.Array) else client_key(seed)
    return PlainState(cache=cache, tokens=token_buffer(prompt_ids, buffer or rows + 2),
                      length=jnp.int32(len(prompt_ids)), step=jnp.int32(0), key=key)


def generate_plain(model, prompt_ids: list[int], max_new_tokens: int = 32,
                   sampling: Sampling = Sampling(), seed: int | None = None, eos_id: int | None = None,
                   on_tokens: OnTokens | None = None) -> GenerationResult:
    """Generates up to `max_new_tokens` ids after `prompt_ids` with `model` (a ModelBundle).

    Stops early after `eos_id` (included in the output). `on_tokens` gets each new id
    list as soon as it is known (streaming). `seed` None draws the key from os.urandom;
    an explicit seed reproduces the run (see `sampling.client_key`).
    """
    config, params = model.config, model.params
    prompt_ids = check_ids(prompt_ids, config)
    rows, max_new = plan_lengths(config, len(prompt_ids), max_new_tokens, lookahead=1)
    t0 = time.perf_counter()
    state = init_plain_state(config, params, prompt_ids, rows, seed)
    jax.block_until_ready(state.cache.length)
    t1 = time.perf_counter()

    def step(state: PlainState) -> tuple[PlainState, int, list[int]]:
        state, nxt = plain_step(config, sampling, params, state)
        return state, 0, [int(nxt[0])]

    run = run_steps(step, state, max_new, max_new_tokens, eos_id, on_tokens)
    return run.result("plain", accepted_per_step=[], prefill_seconds=t1 - t0)
