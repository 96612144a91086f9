"""Softmax along the last axis, with an optional public mask and a temperature.

1. (temperature ≠ 1) x ← x·(1/T) (`mul_const`, 1 round).
2. Masked entries (public mask, e.g. causal) are replaced by a copy of the row's first
   unmasked entry (local): they can neither raise the max nor overflow anything.
3. m = an element within 2^−5 of the row max (`tree_max` with the coarse
   `softmax_max_compare`; one `group_max` for rows of ≤ `max_group` entries, 11 rounds).
   Softmax is shift-invariant, so m need not be the exact max.
4. e = exp(x − m) (`mpc.protocols.nonlinear.exp`, 15 rounds) at scale exp_frac; masked
   entries set to 0 (local): the mask is multiplicative, never an additive −1e4.
5. S = Σe ∈ [1, 1.04·n]; r = 1/S (`reciprocal`, 12 rounds at n = 72).
6. p = e·r truncated to the activation scale (2 rounds).
Rounds (defaults, n ≤ 128): 11 + 15 + 12 + 2 = 40 (+1 with a temperature). Rows that are
fully masked give zeros. Range: unmasked entries of a row must keep |x_i − x_j|/T <
2^9 − 16 (`softmax_max_compare.range_log2` and `exp_compare.range_log2`); beyond it the
coarse comparisons wrap (attention scores and logits stay far below).
Error: ≤ 1e-3 absolute (tests: random scores, all-equal rows, one dominant entry,
masked rows, clip boundaries).
"""

from __future__ import annotations

import jax.numpy as jnp

from mpc.context import Context
from mpc.protocols import linear as L
from mpc.protocols.nonlinear import exp, reciprocal, tree_max
from mpc.ring import DTYPE
from mpc.shares import Shared, where_public


def softmax(ctx: Context, x: Shared, mask=None, temperature: float = 1.0, x_trunc: int = 0,
            op: str = "softmax") -> Shared:
    """softmax(x / temperature) over the last axis; `mask` (public bool, broadcast against
    x; True = keep) removes entries multiplicatively. `x_trunc`: x arrives untruncated by
    this many bits (e.g. attention scores straight from QKᵀ): the max and exp's comparison
    read it as it is, and its truncation rides on exp's first square (one round less).
    Output at x's scale less x_trunc."""
    nl = ctx.config.nonlinear
    f = x.frac - x_trunc
    n = x.shape[-1]
    if temperature <= 0:
        raise ValueError(f"softmax: temperature must be > 0, got {temperature}")
    if temperature != 1.0:
        x = L.mul_const(ctx, x, 1.0 / temperature, op=f"{op}/temperature")
    if mask is not None:
        mask = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
        first = jnp.argmax(mask, axis=-1)  # first kept entry (0 for a fully masked row)
        pick = (jnp.arange(n) == first[..., None]).astype(DTYPE)
        x_first = x.mul_public(pick).sum(axis=-1, keepdims=True)
        x = where_public(mask, x, x_first.broadcast_to(x.shape))
    m, _ = tree_max(ctx, x, nl.softmax_max_compare, nl.max_group, op=f"{op}/max")
    e = exp(ctx, x - m[..., None], out_frac=nl.exp_frac, x_trunc=x_trunc, op=f"{op}/exp")
    if mask is not None:
        e = where_public(mask, e, Shared.public(jnp.zeros(e.shape, DTYPE), e.frac, e.parties))
    total = e.sum(axis=-1, keepdims=True)
    r = reciprocal(ctx, total, lo=1.0, hi=1.04 * n, op=f"{op}/reciprocal")
    p = L.mul(ctx, e, r, op=f"{op}/normalise")
    return L.truncate(ctx, p, p.frac - f, op=f"{op}/normalise/trunc")
