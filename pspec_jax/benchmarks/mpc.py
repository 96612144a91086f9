"""`pspec bench mpc`: the 2PC core's protocols and the exact ring matmul.

Every figure comes from one run on this machine: medians over `repeats` timed calls after
a warm-up (compile) call, communication from the ledger of one call, modelled network
seconds from the presets. The ring matmul is timed against a float64 matmul and XLA's
uint64 `jnp.matmul` of the same shape in the same run.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import mpc
from mpc.prg import derive_keys, request_words
from mpc.protocols import compare as C, linear as L


def dcf_bench_words(label: bytes, count: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of a DCF benchmark from the dealer's AES-CTR streams for `label` (drawn
    outside the timing): (roots (2, count, 2) uint64, both parties' root seeds;
    words (n_rows, count) uint64, uniform words the caller masks into its inputs)."""
    keys = derive_keys(3, label)
    roots = np.stack([request_words(k, 0, 2 * count).reshape(count, 2) for k in keys[:2]])
    return roots, request_words(keys[2], 0, n_rows * count).reshape(n_rows, count)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up: compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ring_matmul_rows(shapes, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    ring, dot = jax.jit(mpc.ring_matmul), jax.jit(jnp.matmul)
    for m, k, n in shapes:
        a = jnp.asarray(rng.integers(0, 2**64, (m, k), dtype=np.uint64))
        b = jnp.asarray(rng.integers(0, 2**64, (k, n), dtype=np.uint64))
        af, bf = jnp.asarray(rng.normal(size=(m, k))), jnp.asarray(rng.normal(size=(k, n)))
        t_ring = median_seconds(lambda: ring(a, b), repeats)
        t_f64 = median_seconds(lambda: dot(af, bf), repeats)
        t_u64 = median_seconds(lambda: dot(a, b), max(1, repeats // 3))
        rows.append({"shape": f"{m}x{k} @ {k}x{n}", "ring_s": t_ring, "float64_s": t_f64, "uint64_jnp_s": t_u64,
                     "ring/float64": t_ring / t_f64, "uint64/ring": t_u64 / t_ring})
    return rows


def _protocol_cases():
    """(name, shape label, builder) — builder(ctx) returns a zero-arg callable."""

    def weight_case(m, k, n):
        def build(ctx):
            sw = L.setup_weight(ctx, np.random.default_rng(1).normal(size=(k, n)) * 0.05)
            x = ctx.share(np.random.default_rng(2).normal(size=(m, k)))
            f = mpc.secure_jit(L.linear)
            return (lambda: f(ctx, x, sw)), lambda out: np.abs(np.asarray(ctx.reveal(out)) - np.asarray(
                ctx.reveal(x)) @ (np.asarray(sw.w).astype(np.int64) / 2**16)).max()
        return build

    def elementwise_case(proto, shape, scale=10.0):
        def build(ctx):
            rng = np.random.default_rng(3)
            x = ctx.share(rng.normal(size=shape) * scale)
            y = ctx.share(rng.normal(size=shape) * scale, owner=mpc.SERVER)
            f = mpc.secure_jit(proto)
            ref = {"mul_fixed": lambda a, b: a * b, "relu": lambda a, b: np.maximum(a, 0),
                   "lt": lambda a, b: (a < b).astype(float)}[proto.__name__]
            xs, ys = np.asarray(ctx.reveal(x)), np.asarray(ctx.reveal(y))
            call = (lambda: f(ctx, x)) if proto is C.relu else (lambda: f(ctx, x, y))

            def err(out):
                if proto is C.lt:
                    return float(np.abs((np.asarray(ctx.channel.open("check", out)) & 1) - ref(xs, ys)).max())
                return float(np.abs(np.asarray(ctx.reveal(out)) - ref(xs, ys)).max())
            return call, err
        return build

    def matmul_case(h, m, k, n):
        def build(ctx):
            rng = np.random.default_rng(4)
            x, y = ctx.share(rng.normal(size=(h, m, k))), ctx.share(rng.normal(size=(h, k, n)))
            f = mpc.secure_jit(lambda c, a, b: L.truncate(c, L.matmul(c, a, b), 16))
            ref = np.asarray(ctx.reveal(x)) @ np.asarray(ctx.reveal(y))
            return (lambda: f(ctx, x, y)), lambda out: float(np.abs(np.asarray(ctx.reveal(out)) - ref).max())
        return build

    return [
        ("linear (matmul_weight+trunc)", "512x768 @ 768x768", weight_case(512, 768, 768)),
        ("linear (matmul_weight+trunc)", "5x576 @ 576x1536", weight_case(5, 576, 1536)),
        ("matmul shared x shared + trunc", "9x(8x64 @ 64x72)", matmul_case(9, 8, 64, 72)),
        ("mul_fixed", "8x3072", elementwise_case(L.mul_fixed, (8, 3072))),
        ("lt (msb)", "8x3072", elementwise_case(C.lt, (8, 3072))),
        ("relu", "8x3072", elementwise_case(C.relu, (8, 3072))),
    ]


def protocol_rows(repeats: int, only_small: bool = False) -> list[dict]:
    rows = []
    for name, shape, build in _protocol_cases():
        if only_small and shape.startswith("512"):
            continue
        ctx = mpc.Context()
        call, err = build(ctx)
        seconds = median_seconds(call, repeats)
        mark = ctx.ledger.snapshot()
        out = call()
        one = ctx.ledger.since(mark)
        t = one.totals()
        rows.append({"protocol": name, "shape": shape, "compute_s": seconds, "bytes_per_party": t.bytes_per_party,
                     "rounds": t.rounds, "lan_s": mpc.network("lan").seconds(one) + seconds,
                     "wan_s": mpc.network("wan").seconds(one) + seconds, "max_abs_err": err(out)})
    return rows
