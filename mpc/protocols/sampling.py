"""Argmax and inverse-transform sampling over shared rows (the vocabulary axis).

The result of both is an index, shared (frac 0) or opened to the client only
(`ctx.channel.open(..., to=CLIENT)`: the server sends its share, 8 bytes per index,
1 round; the server learns nothing).

* `argmax`: `tree_max` with exact comparisons (`argmax_compare`, 24 bits: exact for
  |x_i − x_j| < 128 at f = 16) over groups of `argmax_group` (16) elements per level,
  carrying the index. Tie rule: the lowest index among entries whose *fixed-point
  encodings* are equal (numpy's argmax of the encoded row); entries that differ by at
  least one ulp are ordered exactly. Rounds per level: msb(24) 6 + 1 + msb(8) 4 + 1 = 12;
  ⌈log_16 V⌉ levels (4 for V = 49,152 or 50,257: 48 rounds).
* `sample`: inverse-transform sampling from unnormalised non-negative weights w:
  1. prefix sums P_k = Σ_(i≤k) w_i and the total W = P_(V−1) (local, exact);
  2. u ∈ [0, 1) with `sample_u_bits` (F) bits: each party contributes F bits of its own
     randomness (`Dealer.own_random`), u's bits are their XOR (uniform, known to
     nobody); B2A of the F bits (1 round, ⌈F/8⌉ bytes per sample);
  3. t = u·W exactly (`mul`, untruncated, scale F + frac, 1 round);
  4. c_k = [t < P_k·2^F] for k < V − 1, one batch (msb at `sample_compare`, 64 bits:
     7 rounds, 192 bytes per entry);
  5. index = (V − 1) − Σ c_k after B2A (1 round, ⌈(V−1)/8⌉ bytes): the number of prefix
     sums ≤ t, i.e. i with P_(i−1) ≤ t < P_i, drawn with probability w_i/W up to 2^−F;
  6. open the index to the client (1 round).
  Rounds: 1 + 1 + 7 + 1 + 1 = 11. Needs W·2^(F + frac) < 2^62 (W < 2^22 at frac 16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mpc.context import Context
from mpc.protocols import compare as C
from mpc.protocols import linear as L
from mpc.protocols.nonlinear import coarse_view, exp, msb_bits, ring_const, tree_levels, tree_max
from mpc.ring import DTYPE
from mpc.shares import CLIENT, Shared


def argmax(ctx: Context, x: Shared, op: str = "argmax") -> Shared:
    """Index of the max along the last axis (lowest index on ties), shared, frac 0."""
    nl = ctx.config.nonlinear
    _, idx = tree_max(ctx, x, nl.argmax_compare, nl.argmax_group, with_index=True, op=op)
    return idx


def open_index(ctx: Context, idx: Shared, op: str = "open_index") -> jax.Array:
    """Open a shared index to the client only (the server sends its share; 1 round)."""
    return ctx.channel.open(op, idx, to=CLIENT).astype(jnp.int64)


def sample_index(ctx: Context, w: Shared, op: str = "sample") -> Shared:
    """A draw i ~ w_i / Σw along the last axis (w ≥ 0, not necessarily normalised),
    shared, frac 0. See the module docstring for the steps and costs."""
    nl = ctx.config.nonlinear
    nbits = nl.sample_u_bits
    batch, v = w.shape[:-1], w.shape[-1]
    # 2. u from both parties' own random bits
    words = ctx.dealer.own_random(batch)
    shifts = np.arange(nbits, dtype=np.uint64).reshape((-1,) + (1,) * len(batch))
    bits = words.map(lambda v: (v[:, None] >> shifts[None]) & np.uint64(1))  # (F, *batch)
    u_bits = C.b2a(ctx, bits, op=f"{op}/u")
    u = u_bits.mul_public((np.uint64(1) << shifts)).sum(axis=0).with_frac(nbits)  # (*batch,)
    # 1., 3. prefix sums and t = u·W
    prefix = w.cumsum(axis=-1)
    total = prefix[..., v - 1:]
    t = L.mul(ctx, u[..., None], total, op=f"{op}/threshold")  # scale F + frac, exact
    if v == 1:
        return Shared.public(jnp.zeros((*batch,), DTYPE), parties=ctx.parties)
    scaled = prefix[..., :v - 1].mul_public(np.uint64(1) << np.uint64(nbits), frac=t.frac)
    # 4. c_k = [t < P_k]
    bits, drop = nl.sample_compare.params(t.frac)
    lt = msb_bits(ctx, coarse_view(t, drop) - coarse_view(scaled, drop), bits, op=f"{op}/compare")
    # 5. count
    count = C.b2a(ctx, lt, op=f"{op}/count").sum(axis=-1)
    return (-count).add_public(np.uint64(v - 1))


def sample(ctx: Context, w: Shared, op: str = "sample") -> jax.Array:
    """`sample_index` opened to the client only. Returns the index (int64)."""
    return open_index(ctx, sample_index(ctx, w, op=op), op=f"{op}/open")


def min_temperature(nl, vocab: int) -> float:
    """The lowest sampling temperature whose comparisons cannot wrap for rows with
    max − min ≤ `nl.logit_spread`: x = logits/T must keep |x_i − x_j| inside
    `vocab_max_compare`'s range, and x − m − slack above exp's clip comparison's range.
    (SmolLM2-135M: calibrated spread 53·MARGIN → T ≥ 0.22; greedy decoding is T = 0, exact argmax.)"""
    cmp, ecmp = nl.vocab_max_compare, nl.exp_compare
    step = 2.0 ** (cmp.resolution_log2 or 0)
    slack = tree_levels(vocab, nl.vocab_max_group) * step
    room = min(2.0**cmp.range_log2 - step,
               2.0**ecmp.range_log2 - 2.0 ** (ecmp.resolution_log2 or 0) - nl.exp_clip - slack)
    return nl.logit_spread / room * (1 + 2.0**-8)  # 1/T is encoded with a small relative error


def vocab_weights(ctx: Context, logits: Shared, temperature: float = 1.0, op: str = "weights") -> Shared:
    """Unnormalised weights e = exp(x − m − s) ∝ softmax(x), x = logits / temperature, over
    the last (vocabulary) axis, at scale `exp_frac`.

    m is a coarse tree max (`vocab_max_group`, `vocab_max_compare`): each level's winner is
    within 2^r of its group's max, so m ≥ max(x) − s with s = levels·2^r, and the public
    shift s keeps every exponent ≤ 0 (exp's domain) while the largest weight stays ≥ e^−2s.
    Rounds: (T ≠ 1: 1) + levels·11 (`group_max` at 13 bits; 6 levels at V ≈ 50k) + exp 15.
    """
    nl = ctx.config.nonlinear
    if temperature < min_temperature(nl, logits.shape[-1]):
        raise ValueError(f"vocab_weights: temperature {temperature:g} is below this model's lower bound "
                         f"{min_temperature(nl, logits.shape[-1]):.3g} (use argmax for greedy)")
    x = logits if temperature == 1.0 else L.mul_const(ctx, logits, 1.0 / temperature, op=f"{op}/temperature")
    cmp, group = nl.vocab_max_compare, nl.vocab_max_group
    m, _ = tree_max(ctx, x, cmp, group, op=f"{op}/max")
    slack = tree_levels(x.shape[-1], group) * 2.0 ** (cmp.resolution_log2 or 0)
    shifted = (x - m[..., None]).add_public(ring_const(-slack, x.frac))
    return exp(ctx, shifted, out_frac=nl.exp_frac, op=f"{op}/exp")


def sample_logits(ctx: Context, logits: Shared, temperature: float = 1.0, op: str = "sample_logits") -> jax.Array:
    """A draw from softmax(logits / temperature) opened to the client: `vocab_weights` (no
    reciprocal needed), then `sample`. Rounds: (T ≠ 1: 1) + levels·11 + 15 + 11."""
    return sample(ctx, vocab_weights(ctx, logits, temperature, op=op), op=op)
