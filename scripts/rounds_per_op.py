#!/usr/bin/env python
"""Rounds, online bytes and dealer bytes per party of the main nonlinear ops, for both
comparison protocols (`MPCConfig.comparison`): traced only (the ledger of
`jax.jit(...).lower`), nothing runs, so it takes seconds. Run it on an older checkout
(`PYTHONPATH=OLD python scripts/rounds_per_op.py`) for a before/after table.

Online = bytes a party sends; dealer = the larger of the dealer's sends to either party.
"""

import jax
import numpy as np

import pspec_jax  # noqa: F401  (x64)
import mpc
from mpc.protocols import linear as L
from mpc.protocols import nonlinear as NL
from mpc.protocols import norm as N
from mpc.protocols import sampling as S
from mpc.protocols import softmax as SM


def cost(ctx, fn, *args) -> tuple[int, int, int]:
    with ctx.ledger.capture() as entries:
        jax.jit(lambda *a: fn(ctx, *a)).lower(*args)
    online = [e for e in entries if e.kind == "online"]
    dealer = [e for e in entries if e.kind == "dealer"]
    return (sum(e.rounds for e in online), sum(max(e.bytes0, e.bytes1) for e in online),
            sum(max(e.bytes0, e.bytes1) for e in dealer))


def rows(comparison: str) -> list[tuple[str, tuple[int, int, int]]]:
    config = mpc.MPCConfig(comparison=comparison) if "comparison" in mpc.MPCConfig.__dataclass_fields__ \
        else mpc.MPCConfig()
    ctx = mpc.Context(config, seed=b"rounds-per-op")
    mask = np.arange(72)[None, :] <= (64 + np.arange(8))[:, None]
    gamma = L.setup_weight(ctx, np.ones(576))
    vocab = ctx.share(np.zeros((1, 49152)))
    return [
        ("SiLU (8 x 1536)", cost(ctx, NL.silu, ctx.share(np.zeros((8, 1536))))),
        ("softmax (9 x 8 x 72, causal)", cost(ctx, lambda c, a: SM.softmax(c, a, mask=mask),
                                             ctx.share(np.zeros((9, 8, 72))))),
        ("RMSNorm with scale (8 x 576)", cost(ctx, lambda c, a, w: N.rmsnorm(c, a, w, 1e-6),
                                             ctx.share(np.zeros((8, 576))), gamma)),
        ("argmax over 49,152 (+ open)", cost(ctx, lambda c, a: S.open_index(c, S.argmax(c, a)), vocab)),
        ("sample over 49,152", cost(ctx, S.sample, vocab)),
    ]


if __name__ == "__main__":
    print("| op | comparison | rounds | online MB/party | dealer MB |")
    print("|---|---|---:|---:|---:|")
    for comparison in mpc.context.COMPARISONS if hasattr(mpc.context, "COMPARISONS") else ("kogge-stone",):
        for name, (rounds, online, dealer) in rows(comparison):
            print(f"| {name} | {comparison} | {rounds} | {online / 1e6:.2f} | {dealer / 1e6:.2f} |")
