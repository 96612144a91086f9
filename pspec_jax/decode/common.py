"""Pieces shared by the decoding loops: results, the step loop, sizing, prefill, checks."""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mpc.protocols.rejection import MAX_GAMMA
from pspec_jax.errors import UserError
from pspec_jax.models.arch import forward
from pspec_jax.models.cache import KVCache, init_cache
from pspec_jax.models.config import ModelConfig

# Trace counters: each jitted step body increments its entry when (re)traced, so tests can
# assert that a decode loop compiles once, however many steps it runs.
TRACES: collections.Counter = collections.Counter()

OnTokens = Callable[[list[int]], None]


@dataclasses.dataclass
class GenerationResult:
    """What a decoding run returns (and `pspec generate --json` prints)."""

    mode: str
    tokens: list[int]  # generated ids (prompt excluded), truncated at max_new_tokens / EOS
    steps: int  # forward passes of the private model after prefill
    accepted_per_step: list[int]  # drafts accepted per step (plain: empty)
    alpha_per_step: list[float]  # mean Σ min(p, q) over the step's drafts (plain: empty)
    drafted: int = 0  # drafts proposed in total
    seconds: float = 0.0  # decode wall time (after prefill, compile included on first use)
    prefill_seconds: float = 0.0
    first_step_seconds: float = 0.0  # the first step alone (it compiles on first use)
    first_step_tokens: int = 0
    stop_reason: str = "length"  # "length", "eos" or "context"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts / proposed drafts (empirical; NaN when nothing was drafted)."""
        return sum(self.accepted_per_step) / self.drafted if self.drafted else float("nan")

    @property
    def alpha(self) -> float:
        """Mean over steps of the expected per-draft acceptance Σ min(p, q)."""
        a = self.alpha_per_step
        return sum(a) / len(a) if a else float("nan")

    @property
    def tokens_per_step(self) -> float:
        return len(self.tokens) / self.steps if self.steps else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """Steady-state speed: tokens after the first step over the time after it (the
        first step carries the compilation); all tokens / all time if there is one step."""
        rest = self.seconds - self.first_step_seconds
        if self.steps > 1 and rest > 0:
            return (len(self.tokens) - self.first_step_tokens) / rest
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self, text: str | None = None) -> dict[str, Any]:
        def num(x):
            return None if x != x else round(float(x), 6)  # NaN -> null

        d = {"mode": self.mode, "text": text, "tokens": self.tokens, "steps": self.steps,
             "accepted_per_step": self.accepted_per_step,
             "acceptance_rate": num(self.acceptance_rate), "alpha": num(self.alpha),
             "tokens_per_step": num(self.tokens_per_step),
             "tokens_per_second": num(self.tokens_per_second),
             "seconds": round(self.seconds, 4), "prefill_seconds": round(self.prefill_seconds, 4),
             "first_step_seconds": round(self.first_step_seconds, 4), "first_step_tokens": self.first_step_tokens,
             "stop_reason": self.stop_reason}
        d.update(self.extra)
        return d


def clip_step_tokens(new: list[int], room: int, eos_id: int | None) -> tuple[list[int], bool]:
    """A speculative step's tokens cut to the `room` left in the budget and just after the
    first `eos_id`; and whether that eos came (the generation stops there)."""
    new = new[:room]
    if eos_id is not None and eos_id in new:
        return new[: new.index(eos_id) + 1], True
    return new, False


@dataclasses.dataclass
class StepRun:
    """What `run_steps` saw: the emitted ids, the drafts accepted per step, the stop
    reason and the loop's wall times (prefill excluded)."""

    tokens: list[int]  # cut at max_new / EOS
    accepted: list[int]  # per step
    stop_reason: str  # "length", "eos" or "context"
    seconds: float
    first_step_seconds: float  # the first step alone (it compiles on first use)
    first_step_tokens: int  # ids the first step emitted

    @property
    def steps(self) -> int:
        return len(self.accepted)

    def result(self, mode: str, **fields: Any) -> GenerationResult:
        """The run's GenerationResult: the loop's figures, plus `fields` (alpha_per_step,
        drafted, prefill_seconds, extra, ...), which may replace them."""
        loop = dict(tokens=self.tokens, steps=self.steps, accepted_per_step=self.accepted,
                    alpha_per_step=[], seconds=self.seconds, first_step_seconds=self.first_step_seconds,
                    first_step_tokens=self.first_step_tokens, stop_reason=self.stop_reason)
        return GenerationResult(mode=mode, **{**loop, **fields})


def run_steps(step: Callable[[Any], tuple[Any, int, list[int]]], state: Any, max_new: int,
              max_new_tokens: int, eos_id: int | None = None,
              on_tokens: OnTokens | None = None) -> StepRun:
    """The decode loop of the plain, speculative, tree and POST decoders: a thin loop
    around one step, which it times and reports.

    Calls `step(state) -> (state, n_accepted, emitted)` (emitted: the step's new ids,
    n_accepted + 1 of them) until `max_new` ids are out or `eos_id` came (included), each
    step's ids cut by `clip_step_tokens` and streamed to `on_tokens`. `max_new` is
    `max_new_tokens` clipped to the context: the stop reason is "context" when they differ.
    """
    out: list[int] = []
    accepted: list[int] = []
    stop = "length" if max_new == max_new_tokens else "context"
    t_first, first_tokens = None, 0
    t1 = time.perf_counter()
    while len(out) < max_new:
        state, n, emitted = step(state)
        accepted.append(n)
        new, eos = clip_step_tokens(emitted, max_new - len(out), eos_id)
        if t_first is None:
            t_first, first_tokens = time.perf_counter(), len(new)
        out.extend(new)
        if on_tokens:
            on_tokens(new)
        if eos:
            stop = "eos"
            break
    t2 = time.perf_counter()
    return StepRun(tokens=out, accepted=accepted, stop_reason=stop, seconds=t2 - t1,
                   first_step_seconds=(t_first or t2) - t1, first_step_tokens=first_tokens)


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def plan_lengths(config: ModelConfig, prompt_len: int, max_new_tokens: int,
                 lookahead: int = 1) -> tuple[int, int]:
    """(cache rows, max_new_tokens clipped to the context) for one run.

    The cache is sized in multiples of 128 rows so runs of similar size share compiled
    steps. `lookahead` = tokens a step may append beyond the accepted ones (γ+1 in spec).
    """
    ctx = config.max_seq_len
    if prompt_len < 1:
        raise UserError("the prompt is empty (0 tokens)")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_len + lookahead > ctx:
        raise UserError(f"the prompt has {prompt_len} tokens; with a lookahead of {lookahead} "
                        f"it does not fit the model context of {ctx} tokens")
    max_new = min(max_new_tokens, ctx - prompt_len - lookahead + 1)
    rows = min(ctx, round_up(prompt_len + max_new + lookahead, 128))
    return rows, max_new


def prefill_bucket(n: int, rows: int) -> int:
    """Padded prefill length: the next power of two >= n (>= 8), at most `rows`."""
    b = 8
    while b < n:
        b *= 2
    return min(b, rows)


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill(config: ModelConfig, params: Any, cache: KVCache, tokens: jax.Array,
             n_valid: jax.Array) -> KVCache:
    TRACES["prefill"] += 1
    _, cache2 = forward(config, params, tokens, cache, logits_index=jnp.int32(0))
    return cache2.rollback(cache.length + n_valid)  # drop the padding rows


def prefill(config: ModelConfig, params: Any, ids: list[int], rows: int, batch: int = 1) -> KVCache:
    """A cache of `rows` rows holding `ids` (all of them), built with a padded chunk so
    prompts of similar length reuse one compilation."""
    cache = init_cache(config, batch, rows)
    if not ids:
        return cache
    P = prefill_bucket(len(ids), rows)
    toks = jnp.zeros((batch, P), jnp.int32).at[:, : len(ids)].set(jnp.asarray(ids, jnp.int32))
    return _prefill(config, params, cache, toks, jnp.int32(len(ids)))


def token_buffer(ids: list[int], size: int, batch: int = 1) -> jax.Array:
    buf = jnp.zeros((batch, size), jnp.int32)
    return buf.at[:, : len(ids)].set(jnp.asarray(ids, jnp.int32))


# POST packs the γ accept flags of a step into one 64-bit ring word
# (mpc.protocols.rejection.first_rejection, which refuses more): the protocol's limit.
MAX_POST_GAMMA = MAX_GAMMA


def check_gamma(gamma: int, *, post: bool = False) -> int:
    """The one check of γ (drafts per step): an integer >= 1, and at most MAX_POST_GAMMA
    for POST. Returns it; raises UserError with the offending value."""
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise UserError(f"gamma (drafts per step) must be an integer >= 1, got {gamma!r}")
    if post and gamma > MAX_POST_GAMMA:
        raise UserError(f"gamma (drafts per step) must be <= {MAX_POST_GAMMA} in POST (the secure "
                        f"rejection packs the accept flags into one 64-bit word), got {gamma}")
    return gamma


def check_tree(n_nodes: int) -> int:
    """The one check of a token tree's node budget N (`--tree N`): an integer >= 1.
    Returns it; raises UserError with the offending value."""
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1:
        raise UserError(f"the tree's node budget (--tree N) must be an integer >= 1, got {n_nodes!r}")
    return n_nodes


def check_ids(ids: list[int], config: ModelConfig, what: str = "prompt") -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < config.vocab_size]
    if bad:
        raise UserError(f"{what} has token id {bad[0]} outside the vocabulary [0, {config.vocab_size})")
    return ids
