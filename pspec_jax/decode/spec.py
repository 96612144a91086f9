"""Plain speculative decoding (Leviathan et al. 2023; Chen et al. 2023).

One step: the drafter proposes γ tokens autoregressively (keeping q), the private model
scores the last accepted token plus the γ drafts in one chunked pass (p at γ+1
positions), an accept rule (accept.py) keeps a prefix of n drafts and adds one token
(correction or bonus), and both caches roll back to the accepted prefix. The output
follows the private model's (processed) law exactly; tests check it statistically.

Cache invariants (B = 1; vmap the step for many independent runs):
  * private cache = tokens[:length-1] (the last token is fed by the next verification);
  * drafter cache = tokens[:length-1] or tokens[:length-2] (after all γ drafts pass,
    the γ-th draft was never fed to the drafter). The drafter's first call of a step
    therefore feeds a fixed 2-token chunk of the 1–2 pending tokens and keeps the
    logits of the last real one, so the step has one shape and compiles once.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from pspec_jax.decode.accept import SpeculativeRule, acceptance_alpha
from pspec_jax.decode.common import (TRACES, GenerationResult, OnTokens, check_gamma, check_ids,
                                     plan_lengths, prefill, run_steps, token_buffer)
from pspec_jax.decode.sampling import Sampling, client_key, sample, step_key
from pspec_jax.errors import UserError
from pspec_jax.models.arch import forward
from pspec_jax.models.cache import KVCache
from pspec_jax.models.config import ModelConfig

F32 = jnp.float32


@struct.dataclass
class SpecState:
    cache_p: KVCache  # private model cache
    cache_d: KVCache  # drafter cache
    tokens: jax.Array  # (1, N) int32: prompt then emitted ids
    length: jax.Array  # int32 scalar: tokens so far (prompt included)
    step: jax.Array  # int32 scalar
    key: jax.Array  # base PRNG key of the run


@struct.dataclass
class StepInfo:
    n_accepted: jax.Array  # int32 scalar in [0, γ]
    emitted: jax.Array  # (γ+1,) int32; the first n_accepted + 1 are the new tokens
    alpha: jax.Array  # float32 scalar: mean over drafts of Σ min(p_i, q_i)
    drafts: jax.Array  # (γ,) int32


def draft_tokens(config_d: ModelConfig, sampling: Sampling, gamma: int, params_d: Any,
                 cache_d: KVCache, tokens: jax.Array, length: jax.Array,
                 key: jax.Array) -> tuple[jax.Array, jax.Array, KVCache]:
    """γ drafts x_i ~ q_i from the drafter. Returns (drafts (γ,), q (γ, V), cache)."""
    d_len = cache_d.length
    n_pend = length - d_len  # 1 or 2 tokens not yet in the drafter cache
    pend = jax.lax.dynamic_slice(tokens, (jnp.int32(0), d_len), (1, 2))  # (1, 2)
    logits, cache_d = forward(config_d, params_d, pend, cache_d)  # (1, 2, V)
    cache_d = cache_d.rollback(d_len + n_pend)  # drop the padding row when n_pend == 1
    keys = jax.random.split(key, gamma)
    q0 = sampling.probs(logits[0, n_pend - 1])  # (V,)
    x0 = sample(keys[0], q0)

    def body(carry, k):
        cache, x = carry
        lg, cache = forward(config_d, params_d, x.reshape(1, 1), cache)
        q = sampling.probs(lg[0, 0])
        x2 = sample(k, q)
        return (cache, x2), (x2, q)

    if gamma == 1:
        return x0[None], q0[None], cache_d
    (cache_d, _), (xs, qs) = jax.lax.scan(body, (cache_d, x0), keys[1:])
    drafts = jnp.concatenate([x0[None], xs])  # (γ,)
    q = jnp.concatenate([q0[None], qs], axis=0)  # (γ, V)
    return drafts, q, cache_d


def spec_step_fn(config_p: ModelConfig, config_d: ModelConfig, sampling: Sampling, gamma: int,
                 rule: Any, params_p: Any, params_d: Any,
                 state: SpecState) -> tuple[SpecState, StepInfo]:
    """One speculative step (pure, jittable, vmappable over independent states)."""
    TRACES["spec_step"] += 1
    k_draft, k_acc = jax.random.split(step_key(state.key, state.step))
    length = state.length
    # 1. draft γ tokens with the public model.
    drafts, q, cache_d = draft_tokens(config_d, sampling, gamma, params_d, state.cache_d,
                                      state.tokens, length, k_draft)
    # 2. verify: the last token plus the γ drafts in one chunked private pass.
    last = jax.lax.dynamic_slice(state.tokens, (jnp.int32(0), length - 1), (1, 1))  # (1, 1)
    chunk = jnp.concatenate([last, drafts[None]], axis=1)  # (1, γ+1)
    logits, cache_p = forward(config_p, params_p, chunk, state.cache_p)  # (1, γ+1, V)
    p = sampling.probs(logits[0])  # (γ+1, V)
    # 3. accept a prefix, then the correction / bonus token.
    n, y = rule(k_acc, p, q, drafts)
    idx = jnp.arange(gamma + 1, dtype=jnp.int32)
    ext = jnp.concatenate([drafts, jnp.zeros((1,), jnp.int32)])
    emitted = jnp.where(idx < n, ext, jnp.where(idx == n, y, 0)).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice(state.tokens, emitted[None], (jnp.int32(0), length))
    new_len = length + n + 1
    # 4. roll both caches back to the accepted prefix (all but the newest token).
    cache_p = cache_p.rollback(new_len - 1)
    cache_d = cache_d.rollback(jnp.minimum(cache_d.length, new_len - 1))
    alpha = jnp.mean(acceptance_alpha(p[:gamma], q))
    info = StepInfo(n_accepted=n, emitted=emitted, alpha=alpha, drafts=drafts)
    return SpecState(cache_p=cache_p, cache_d=cache_d, tokens=tokens, length=new_len,
                     step=state.step + 1, key=state.key), info


spec_step = jax.jit(spec_step_fn, static_argnames=("config_p", "config_d", "sampling", "gamma", "rule"))


def check_pair(private, drafter) -> None:
    """Raises UserError unless the drafter can draft for the private model."""
    from pspec_jax.models.tokenizer import check_same_tokenizer

    check_same_tokenizer(private.tokenizer, drafter.tokenizer,
                         private_name=f"private model ({private.name})",
                         drafter_name=f"drafter ({drafter.name})")
    if private.config.vocab_size != drafter.config.vocab_size:
        raise UserError(f"the drafter has {drafter.config.vocab_size} vocabulary rows, the "
                        f"private model {private.config.vocab_size}: they must share a vocabulary")


def init_spec_state(private, drafter, prompt_ids: list[int], rows: int,
                    seed: int | None | jax.Array, buffer: int | None = None) -> SpecState:
    key = seed if isinstance(seed, jax.Array) else client_key(seed)
    return SpecState(cache_p=prefill(private.config, private.params, prompt_ids[:-1], rows),
                     cache_d=prefill(drafter.config, drafter.params, prompt_ids[:-1], rows),
                     tokens=token_buffer(prompt_ids, buffer or rows + 2),
                     length=jnp.int32(len(prompt_ids)), step=jnp.int32(0), key=key)


def generate_spec(private, drafter, prompt_ids: list[int], max_new_tokens: int = 32,
                  gamma: int = 4, sampling: Sampling = Sampling(), seed: int | None = None,
                  eos_id: int | None = None, on_tokens: OnTokens | None = None,
                  rule: Any = SpeculativeRule()) -> GenerationResult:
    """Speculative decoding of `private` (a ModelBundle) with `drafter` (a ModelBundle).

    Emits exactly the private model's law (for the given `sampling`); stops after
    `max_new_tokens` ids or after `eos_id`. Per step it records the accepted count and
    α = mean Σ min(p, q) over the drafts. `seed` None draws the key from os.urandom; an
    explicit seed reproduces the run (see `sampling.client_key`).
    """
    check_gamma(gamma)
    check_pair(private, drafter)
    prompt_ids = check_ids(prompt_ids, private.config)
    rows_p, max_new = plan_lengths(private.config, len(prompt_ids), max_new_tokens, gamma + 1)
    rows_d, _ = plan_lengths(drafter.config, len(prompt_ids), max_new, gamma + 1)
    rows = min(rows_p, rows_d)
    if rows < len(prompt_ids) + max_new + gamma:
        max_new = max(1, rows - len(prompt_ids) - gamma)
    t0 = time.perf_counter()
    state = init_spec_state(private, drafter, prompt_ids, rows, seed, buffer=rows + gamma + 3)
    jax.block_until_ready(state.cache_p.length)
    t1 = time.perf_counter()
    alphas: list[float] = []

    def step(state: SpecState) -> tuple[SpecState, int, list[int]]:
        state, info = spec_step(private.config, drafter.config, sampling, gamma, rule,
                                private.params, drafter.params, state)
        n = int(info.n_accepted)
        alphas.append(float(info.alpha))
        return state, n, [int(t) for t in info.emitted[: n + 1]]

    run = run_steps(step, state, max_new, max_new_tokens, eos_id, on_tokens)
    return run.result("spec", alpha_per_step=alphas, drafted=gamma * run.steps,
                      prefill_seconds=t1 - t0, extra={"gamma": gamma})
