"""Bytes and rounds of the nonlinear protocols equal their formulas exactly.

The programs are only traced (`jax.jit(...).lower` inside a ledger capture), which
records every message without compiling or running anything.
"""

import math

import jax
import numpy as np
import pytest

import mpc
from mpc.protocols import linear as L
from mpc.protocols import nonlinear as NL
from mpc.protocols import norm as N
from mpc.protocols import softmax as SM
from mpc.protocols import sampling as S


@pytest.fixture(scope="module")
def ctx():
    return mpc.Context(seed=b"nl-ledger")


def _cost(ctx, fn, *args):
    with ctx.ledger.capture() as entries:
        jax.jit(lambda *a: fn(ctx, *a)).lower(*args)
    on = [e for e in entries if e.kind == "online"]
    return sum(e.bytes0 for e in on), sum(e.bytes1 for e in on), sum(e.rounds for e in on)


# --- per-step formulas (bytes per party, rounds) -------------------------------------------------
def msb(bits, n):  # Kogge-Stone on words of 64 // bits lanes (the last word padded)
    bits = max(8, bits)
    lv = math.ceil(math.log2(bits - 1))
    lanes = 64 // bits
    return 4 * lv * math.ceil(-(-n // lanes) * lanes * bits / 8), 1 + lv


def add(*parts):
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def select(n):
    return 8 * n + math.ceil(n / 8), 1


def b2a(n):
    return math.ceil(n / 8), 1


def trunc(n):
    return 8 * n, 1


def poly_untruncated4(n):  # square, then x²'s truncation fused with x³ = x²·x and x⁴ = (x²)²
    return add((8 * n, 1), (16 * n, 1))


def poly4(n, npolys):  # + the final truncation of every polynomial
    return add(poly_untruncated4(n), trunc(npolys * n))


def poly_untruncated8(n):  # + x³, x⁴'s truncation fused with x⁵..x⁸ (partners x, x²; pairs)
    return add(poly_untruncated4(n), (32 * n, 1))


def fused_select(n, stacked, selections, tails=0):  # truncate_products: truncation + selections + riders
    return 8 * stacked * n + selections * math.ceil(n / 8) + tails * (8 * n + math.ceil(n / 8)), 1


def piecewise(n, spec):
    k = len(spec.breaks)
    return add(msb(16, (2 * k + 3) * n), poly_untruncated4(n), fused_select(n, 2 * (k + 1), 2 * (k + 1), tails=1))


def exp(n, squarings=2):
    return add(msb(9, n), poly_untruncated8(n), *[(8 * n, 1)] * squarings, fused_select(n, 1, 1))


def normalised(n, lo, hi, npolys, q=16, tol=4):
    jlo, jhi = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    e = jhi - jlo
    drop = max(0, jlo + 1 + q - tol)
    bits = max(8, jhi + q - drop + 2)
    return add(msb(bits, (e - 1) * n), select(e * n), poly_untruncated4(n), fused_select(n, npolys, e))


def normalised_times(m, n, lo, hi, q, tol=4):  # rsqrt_times: the rows' products ride on truncations
    jlo, jhi = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    e = jhi - jlo
    drop = max(0, jlo + 1 + q - tol)
    bits = max(8, jhi + q - drop + 2)
    return add(msb(bits, (e - 1) * m), select(e * m), poly_untruncated4(m),
               (16 * m + 16 * m * n, 1), fused_select(m * n, 2, e))


def group_max(rows, g, carried=0, bits=16):
    pairs = g * (g - 1) // 2
    return add(msb(bits, rows * pairs), b2a(rows * pairs), msb(max(8, math.ceil(math.log2(g)) + 2), rows * g),
               select((1 + carried) * rows * g))


def sym(c):
    return c[0], c[0], c[1]


@pytest.mark.parametrize("name", ["gelu", "silu", "sigmoid"])
def test_activation_costs(ctx, name):
    x = ctx.share(np.zeros((3, 40)))
    spec = getattr(ctx.config.nonlinear, name)
    assert _cost(ctx, getattr(NL, name), x) == sym(piecewise(120, spec))
    assert _cost(ctx, getattr(NL, name), x)[2] == 8


def test_exp_reciprocal_rsqrt_costs(ctx):
    x = ctx.share(np.zeros((5, 7)))
    assert _cost(ctx, NL.exp, x) == sym(exp(35))
    assert _cost(ctx, lambda c, a: NL.reciprocal(c, a, 1.0, 76.0), x) == sym(normalised(35, 1.0, 76.0, 1))
    assert _cost(ctx, lambda c, a: NL.rsqrt(c, a, 0.0768, 7.68e6), x) == sym(normalised(35, 0.0768, 7.68e6, 2))
    assert _cost(ctx, NL.exp, x)[2] == 10
    assert _cost(ctx, lambda c, a: NL.reciprocal(c, a, 1.0, 76.0), x)[2] == 9


def test_softmax_cost(ctx):
    h, t, n = 3, 8, 72
    rows = h * t
    x = ctx.share(np.zeros((h, t, n)))
    mask = np.arange(n)[None, :] <= (n - t + np.arange(t))[:, None]
    want = add(group_max(rows, n), exp(rows * n),
               normalised(rows, 1.0, 1.04 * n, 1, q=ctx.config.nonlinear.exp_frac),
               (16 * rows * n, 1), trunc(rows * n))
    assert _cost(ctx, lambda c, a: SM.softmax(c, a, mask=mask), x) == sym(want)
    assert want[1] == 32


def test_norm_costs(ctx):
    m, n = 8, 768
    x = ctx.share(np.zeros((m, n)))
    sw = L.setup_weight(ctx, np.ones(n))
    nl = ctx.config.nonlinear
    core = normalised_times(m, n, n * nl.norm_var_lo, n * nl.norm_var_hi, q=32)
    b0, b1, r = _cost(ctx, lambda c, a, w: N.layernorm(c, a, w, None, 1e-5), x, sw)
    want = add(trunc(m), (8 * m * n, 1), core, trunc(m * n))
    assert (b0, b1, r) == (want[0] + 8 * m * n, want[0], want[1] + 1)  # mul_weight: the client sends 8·m·n
    assert r == 15
    b0, b1, r = _cost(ctx, lambda c, a, w: N.rmsnorm(c, a, w, 1e-6), x, sw)
    want = add((8 * m * n, 1), core, trunc(m * n))
    assert (b0, b1, r) == (want[0] + 8 * m * n, want[0], want[1] + 1)
    assert r == 14


def test_layer_round_budget(ctx):
    """GPT-2 layer at T = 8: 2 LayerNorms + causal softmax over 12 heads + GeLU: 70 rounds
    with Kogge–Stone comparisons (88 before truncations carried the next products)."""
    x = ctx.share(np.zeros((8, 768)))
    sw = L.setup_weight(ctx, np.ones(768))
    s = ctx.share(np.zeros((12, 8, 72)))
    mask = np.arange(72)[None, :] <= (64 + np.arange(8))[:, None]
    h = ctx.share(np.zeros((8, 3072)))
    rounds = (2 * _cost(ctx, lambda c, a, w: N.layernorm(c, a, w, None, 1e-5), x, sw)[2]
              + _cost(ctx, lambda c, a: SM.softmax(c, a, mask=mask), s)[2] + _cost(ctx, NL.gelu, h)[2])
    assert rounds == 70 <= 100


def test_argmax_and_sample_costs(ctx):
    rows, v = 2, 48
    x = ctx.share(np.zeros((rows, v)))
    # levels: ⌈log_16 48⌉ = 2, balanced group 7: 48 -> 7 groups of 7 (one pad) -> 1 group of 7
    want = add(group_max(rows * 7, 7, carried=1, bits=24), group_max(rows, 7, carried=1, bits=24))
    b0, b1, r = _cost(ctx, lambda c, a: S.open_index(c, S.argmax(c, a)), x)
    assert (b0, b1, r) == (want[0], want[0] + 8 * rows, want[1] + 1)  # the server sends its share
    f = ctx.config.nonlinear.sample_u_bits
    want = add(b2a(f * rows), (16 * rows, 1), msb(64, rows * (v - 1)), b2a(rows * (v - 1)))
    assert _cost(ctx, S.sample, x) == (want[0], want[0] + 8 * rows, want[1] + 1)
    assert want[1] + 1 == 11
