"""Benchmark rows for the nonlinear protocols (called by `pspec bench mpc`).

`nonlinear_rows(repeats)` returns, per op and shape: the median compute seconds of the
`secure_jit`-compiled protocol (after a warm-up call that compiles it), bytes per party
and rounds of one call (from the ledger), the modelled lan/wan seconds, and the error
against float64 on realistic inputs measured in the same run (`max_abs_err`; relative
error too for reciprocal and rsqrt; `mismatches` against numpy for argmax; for the
sampler `tv_4096_draws`, the total variation between 4096 secure draws from a 16-way law
and that law, ≈ 0.02 expected from sampling noise alone). Two summary rows add up one transformer layer's nonlinear work
at T = 8 (GPT-2: 2 LayerNorms, causal softmax over 12 heads, GeLU; SmolLM2: 2 RMSNorms,
softmax over 9 heads, SiLU).

Run: `pspec bench mpc` (all MPC tables) or `python -m pspec_jax.benchmarks.nonlinear [repeats]`.
"""

from __future__ import annotations

import sys

import numpy as np

import mpc
from mpc.protocols import linear as L
from mpc.protocols import nonlinear as NL
from mpc.protocols.norm import layernorm, rmsnorm
from mpc.protocols.softmax import softmax
from mpc.protocols import sampling as S
from pspec_jax.benchmarks.mpc import median_seconds


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x, mask):
    x = np.where(mask, x, -np.inf)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _causal(tq: int, n: int) -> np.ndarray:
    return np.arange(n)[None, :] <= (n - tq + np.arange(tq))[:, None]


def _cases(rng):
    """(name, shape string, inputs (reals), fn(ctx, shared, **prep) -> output, reference, prep)."""
    cases = []
    heads_t_n = {"gpt2": (12, 8, 72), "smollm2": (9, 8, 72)}
    for tag, (h, t, n) in heads_t_n.items():
        x = rng.normal(size=(h, t, n)) * 3
        mask = _causal(t, n)
        cases.append((f"softmax causal ({tag})", f"{h}x{t}x{n}", x,
                      lambda ctx, s, mask=mask: softmax(ctx, s, mask=mask), _softmax(x, mask), {}))
    x = rng.normal(size=(8, 3072)) * 3
    cases.append(("gelu", "8x3072", x, NL.gelu, _gelu(x), {}))
    x = rng.normal(size=(8, 1536)) * 3
    cases.append(("silu", "8x1536", x, NL.silu, x / (1 + np.exp(-x)), {}))
    cases.append(("silu", "5x1536", x[:5], NL.silu, x[:5] / (1 + np.exp(-x[:5])), {}))
    for name, (m, d), fam in (("layernorm", (8, 768), "ln"), ("rmsnorm", (5, 576), "rms"), ("rmsnorm", (8, 576), "rms")):
        scale = np.exp(rng.uniform(np.log(1e-2), np.log(1e2), size=(m, 1)))
        x = rng.normal(size=(m, d)) * np.sqrt(scale) + (rng.normal(size=(m, 1)) if fam == "ln" else 0)
        g, b = 1 + 0.1 * rng.normal(size=d), 0.1 * rng.normal(size=d)
        if fam == "ln":
            ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
            fn = lambda ctx, s, sw, bias: layernorm(ctx, s, sw, bias, 1e-5)  # noqa: E731
        else:
            ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * g
            fn = lambda ctx, s, sw, bias: rmsnorm(ctx, s, sw, 1e-6)  # noqa: E731
        cases.append((name, f"{m}x{d}", x, fn, ref, {"g": g, "b": b if fam == "ln" else None}))
    z = -rng.uniform(0, 20, size=(9, 8, 72))
    cases.append(("exp", "9x8x72", z, NL.exp, np.where(z < -16, 0, np.exp(z)), {}))
    s = np.exp(rng.uniform(0, np.log(76), size=4096))
    cases.append(("reciprocal [1, 76]", "4096", s, lambda ctx, a: NL.reciprocal(ctx, a, 1.0, 76.0), 1 / s, {}))
    v = np.exp(rng.uniform(np.log(0.0768), np.log(7.68e6), size=4096))
    cases.append(("rsqrt [0.077, 7.7e6]", "4096", v, lambda ctx, a: NL.rsqrt(ctx, a, 0.0768, 7.68e6), v**-0.5, {}))
    return cases


def _row(name, shape, seconds, one: mpc.Ledger, **extra) -> dict:
    t = one.totals()
    return {"protocol": name, "shape": shape, "compute_s": seconds, "bytes_per_party": t.bytes_per_party,
            "rounds": t.rounds, "lan_s": mpc.network("lan").seconds(one) + seconds,
            "wan_s": mpc.network("wan").seconds(one) + seconds, **extra}


def nonlinear_rows(repeats: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    rows, by = [], {}
    for name, shape, x, fn, ref, prep in _cases(rng):
        ctx = mpc.Context()
        fp = ctx.config.fixed
        xs = ctx.share(x)
        if "g" in prep:
            sw = L.setup_weight(ctx, prep["g"])
            bias = None if prep["b"] is None else fp.encode(prep["b"])
            jf = mpc.secure_jit(fn)
            call = lambda jf=jf, ctx=ctx, xs=xs, sw=sw, bias=bias: jf(ctx, xs, sw, bias)  # noqa: E731
        else:
            jf = mpc.secure_jit(fn)
            call = lambda jf=jf, ctx=ctx, xs=xs: jf(ctx, xs)  # noqa: E731
        seconds = median_seconds(call, repeats)
        mark = ctx.ledger.snapshot()
        out = call()
        one = ctx.ledger.since(mark)
        got = np.asarray(ctx.reveal(out))
        extra = {"max_abs_err": float(np.abs(got - ref).max())}
        if name.startswith(("reciprocal", "rsqrt")):
            extra["max_rel_err"] = float((np.abs(got - ref) / np.abs(ref)).max())
        rows.append(_row(name, shape, seconds, one, **extra))
        by[(name.split(" ")[0] + (" " + name.split("(")[-1].rstrip(")") if "(" in name else ""), shape)] = rows[-1]

    # argmax over a vocabulary row: mismatches against numpy on the encoded values
    ctx = mpc.Context()
    logits = rng.normal(size=(1, 49152)) * 5
    xs = ctx.share(logits)
    enc = np.asarray(ctx.config.fixed.encode(logits)).astype(np.int64)
    jf = mpc.secure_jit(lambda c, a: S.open_index(c, S.argmax(c, a)))
    seconds = median_seconds(lambda: jf(ctx, xs), repeats)
    mark = ctx.ledger.snapshot()
    got = np.asarray(jf(ctx, xs))
    rows.append(_row("argmax (opened to client)", "1x49152", seconds, ctx.ledger.since(mark),
                     mismatches=int(np.sum(got != np.argmax(enc, -1)))))

    # inverse-transform sampling over a vocabulary row (probabilities at f = 16)
    ctx = mpc.Context()
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    ps = ctx.share(p)
    jf = mpc.secure_jit(S.sample)
    seconds = median_seconds(lambda: jf(ctx, ps), repeats)
    mark = ctx.ledger.snapshot()
    jf(ctx, ps)
    one = ctx.ledger.since(mark)
    # correctness of the sampler: TV distance of 4096 draws from a 16-way law vs the exact one
    w = rng.uniform(0, 1, size=16)
    ws = ctx.share(np.tile(w, (4096, 1)))
    q = np.asarray(ctx.config.fixed.decode(ctx.config.fixed.encode(w)))
    draws = np.asarray(mpc.secure_jit(S.sample)(ctx, ws))
    tv = 0.5 * np.abs(np.bincount(draws, minlength=16) / 4096 - q / q.sum()).sum()
    rows.append(_row("sample (opened to client)", "1x49152", seconds, one, tv_4096_draws=float(tv)))

    def layer(name, parts):
        present = [by[k] for k in parts if k in by]
        if len(present) != len(parts):
            return
        rows.append({"protocol": name, "shape": "T=8", "compute_s": sum(r["compute_s"] for r in present),
                     "bytes_per_party": sum(r["bytes_per_party"] for r in present),
                     "rounds": sum(r["rounds"] for r in present), "lan_s": sum(r["lan_s"] for r in present),
                     "wan_s": sum(r["wan_s"] for r in present),
                     "max_abs_err": max(r["max_abs_err"] for r in present)})  # noqa: E501

    layer("layer nonlinear: GPT-2 (2 LN + softmax + GeLU)",
          [("layernorm", "8x768"), ("layernorm", "8x768"), ("softmax gpt2", "12x8x72"), ("gelu", "8x3072")])
    layer("layer nonlinear: SmolLM2 (2 RMSNorm + softmax + SiLU)",
          [("rmsnorm", "8x576"), ("rmsnorm", "8x576"), ("softmax smollm2", "9x8x72"), ("silu", "8x1536")])
    return rows


if __name__ == "__main__":  # pragma: no cover
    from pspec_jax.benchmarks.table import format_table

    print(format_table(nonlinear_rows(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
