"""LayerNorm and RMSNorm over shared rows, with the server's scale and bias.

Both end in one rsqrt per row (`mpc.protocols.nonlinear.rsqrt`: MSB normalisation,
polynomial, exact power-of-two correction) and two products. The learned scale γ is a
`ServerWeight` prepared once per session (`mpc.protocols.linear.setup_weight`), applied
with `mul_weight` (only the client's share is masked); the bias β is the server's ring
vector (at the activation scale), added locally by the server.

Rounds (defaults, n ≤ 1024): LayerNorm 1 (mean) + 1 (squares) + 13 (rsqrt) + 2 (x̂ =
d·r) + 2 (γ) = 19; RMSNorm 18. Without γ, 2 fewer.
"""

from __future__ import annotations

import math

from mpc.context import Context
from mpc.protocols import linear as L
from mpc.protocols.nonlinear import ring_const, rsqrt
from mpc.shares import SERVER, Shared


def _normalise_rows(ctx: Context, d: Shared, sum_sq: Shared, eps: float, scale, bias, op: str) -> Shared:
    nl = ctx.config.nonlinear
    n = d.shape[-1]
    # Σd² + n·eps at scale 2f; rsqrt(Σd²/n + eps) = √n · rsqrt(Σd² + n·eps)
    v = sum_sq.add_public(ring_const(n * eps, sum_sq.frac))
    r = rsqrt(ctx, v, lo=n * nl.norm_var_lo, hi=n * nl.norm_var_hi, mult=math.sqrt(n), op=f"{op}/rsqrt")
    y = L.truncate(ctx, L.mul(ctx, d, r, op=f"{op}/mul"), r.frac, op=f"{op}/mul/trunc")
    if scale is not None:
        y = L.truncate(ctx, L.mul_weight(ctx, y, scale, op=f"{op}/scale"), scale.frac, op=f"{op}/scale/trunc")
    if bias is not None:
        y = y.add_public(bias, party=SERVER)
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
    d = x - mu
    sum_sq = L.square(ctx, d, op=f"{op}/square").sum(axis=-1, keepdims=True)
    return _normalise_rows(ctx, d, sum_sq, eps, scale, bias, op)


def rmsnorm(ctx: Context, x: Shared, scale: L.ServerWeight | None, eps: float = 1e-6,
            op: str = "rmsnorm") -> Shared:
    """x/√(mean(x²) + eps)·γ over the last axis: `layernorm` without the mean (18 rounds)."""
    sum_sq = L.square(ctx, x, op=f"{op}/square").sum(axis=-1, keepdims=True)
    return _normalise_rows(ctx, x, sum_sq, eps, scale, None, op)
