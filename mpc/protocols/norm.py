"""LayerNorm and RMSNorm over shared rows, with the server's scale and bias.

Both end in `mpc.protocols.nonlinear.rsqrt_times` per row (MSB normalisation,
polynomial, the product with the row and the exact power-of-two correction, the last two
riding on truncations). Without γ the output keeps S = ⌊(⌈log2 hi⌉ − 1)/2⌋ extra
fractional bits (its frac says so), which the next linear layer's truncation drops; the
learned scale γ is a `ServerWeight` prepared once per session
(`mpc.protocols.linear.setup_weight`), applied with `mul_weight` (only the client's share
is masked) and truncated back to the activations' scale; the bias β is the server's ring
vector, added locally by the server.

Rounds (defaults, n ≤ 1024, Kogge–Stone comparisons): LayerNorm 1 (mean) + 1 (squares)
+ rsqrt_times 11 + 2 (γ) = 15; RMSNorm 14. Without γ, 2 fewer. With DCF comparisons 6
fewer.

Wide rows: Σd² is exact at scale 2f while n·norm_var_hi·2^(2f) < 2^62 (truncation's and
the exponent search's bound: n < 716 at f = 16 and norm_var_hi = 1.5e6). Beyond it every
square first drops t = ⌈log2(n·norm_var_hi)⌉ + 2f − 62 low bits (one round and 8 bytes
per element more; the sum's error stays below n·2^(t − 2f), relative 2^(t−2f)/norm_var_lo).
"""

from __future__ import annotations

import math

import numpy as np

from mpc.context import Context
from mpc.protocols import linear as L
from mpc.protocols.nonlinear import ring_const, rsqrt, rsqrt_times, rsqrt_times_fits
from mpc.shares import SERVER, Shared


def _normalise_rows(ctx: Context, d: Shared, eps: float, scale, bias, op: str) -> Shared:
    nl = ctx.config.nonlinear
    n = d.shape[-1]
    lo, hi = n * nl.norm_var_lo, n * (nl.norm_var_hi + eps)
    squares = L.square(ctx, d, op=f"{op}/square")  # exact, scale 2f
    drop = max(0, math.ceil(math.log2(hi)) + squares.frac - 62)
    if drop:  # wide rows: Σd² at scale 2f would pass 2^62 (module docstring)
        squares = L.truncate(ctx, squares, drop, op=f"{op}/square/trunc")
    # Σd² + n·eps; rsqrt(Σd²/n + eps) = √n · rsqrt(Σd² + n·eps)
    v = squares.sum(axis=-1, keepdims=True).add_public(ring_const(n * eps, squares.frac))
    if rsqrt_times_fits(ctx, hi, math.sqrt(n), d.frac):
        y = rsqrt_times(ctx, v, d, lo=lo, hi=hi, mult=math.sqrt(n), op=f"{op}/rsqrt")  # scale f + S
    else:  # rows too wide for the fused product: the product after the selection (one round more)
        r = rsqrt(ctx, v, lo=lo, hi=hi, mult=math.sqrt(n), op=f"{op}/rsqrt")
        y = L.truncate(ctx, L.mul(ctx, d, r, op=f"{op}/mul"), r.frac, op=f"{op}/mul/trunc")
    if scale is not None:
        y = L.truncate(ctx, L.mul_weight(ctx, y, scale, op=f"{op}/scale"), scale.frac + y.frac - d.frac,
                       op=f"{op}/scale/trunc")
    if bias is not None:  # at y's scale (f + S without γ)
        y = y.add_public(bias * np.uint64(1 << (y.frac - d.frac)), party=SERVER)
    return y


def layernorm(ctx: Context, x: Shared, scale: L.ServerWeight | None, bias=None, eps: float = 1e-5,
              op: str = "layernorm") -> Shared:
    """(x − μ)/√(σ² + eps)·γ + β over the last axis.

    1. μ = Σx · (1/n) (one truncation, 1 round; needs |μ| < 2^14); d = x − μ.
    2. Σd² from one `square` (exact, scale 2f, 1 round).
    3. r = √n / √(Σd² + n·eps) (`rsqrt` on n·[norm_var_lo, norm_var_hi], 13 rounds).
    4. x̂ = d·r, truncated (2 rounds); γ·x̂ (`mul_weight` + truncate, 2 rounds); + β.
    Args: scale: γ as a ServerWeight of shape (n,) or None; bias: β ring-encoded at x's
    scale (the server's) or None.
    Error: ≤ 1e-2 absolute for variances in [1e-4, 1e4] (see tests).
    """
    n = x.shape[-1]
    # μ = Σx·(1/n) with 1/n at 2f bits (at f bits its rounding alone shifts μ by 0.4%·μ)
    k = x.frac + 16
    mu = L.truncate(ctx, x.sum(axis=-1, keepdims=True).mul_public(ring_const(1.0 / n, k), frac=x.frac + k), k,
                    op=f"{op}/mean")
    return _normalise_rows(ctx, x - mu, eps, scale, bias, op)


def rmsnorm(ctx: Context, x: Shared, scale: L.ServerWeight | None, eps: float = 1e-6,
            op: str = "rmsnorm") -> Shared:
    """x/√(mean(x²) + eps)·γ over the last axis: `layernorm` without the mean (18 rounds)."""
    return _normalise_rows(ctx, x, eps, scale, None, op)
