"""Bytes and rounds recorded by the channel equal each protocol's formula exactly."""

import math

import numpy as np
import pytest

import mpc
from mpc.protocols import compare as C, linear as L


def _cost(ctx, fn):
    mark = ctx.ledger.snapshot()
    fn()
    t = ctx.ledger.since(mark).totals("online")
    d = ctx.ledger.since(mark).totals("dealer")
    return t.bytes0, t.bytes1, t.rounds, d.bytes1


@pytest.fixture
def ctx():
    return mpc.Context(seed=b"ledger")


def test_mul_matmul_trunc_formulas(ctx):
    x, y = ctx.share(np.ones((6, 7))), ctx.share(np.ones((6, 7)))
    n = 42
    assert _cost(ctx, lambda: L.mul(ctx, x, y)) == (16 * n, 16 * n, 1, 8 * n)
    assert _cost(ctx, lambda: L.square(ctx, x)) == (8 * n, 8 * n, 1, 8 * n)
    assert _cost(ctx, lambda: L.truncate(ctx, x, 16)) == (8 * n, 8 * n, 1, 16 * n)
    assert _cost(ctx, lambda: L.mul_fixed(ctx, x, y)) == (24 * n, 24 * n, 2, 24 * n)
    a, b = ctx.share(np.ones((3, 5, 8))), ctx.share(np.ones((3, 8, 4)))
    assert _cost(ctx, lambda: L.matmul(ctx, a, b)) == (8 * (120 + 96), 8 * (120 + 96), 1, 8 * 60)


@pytest.mark.parametrize("m,k,n", [(5, 576, 1536), (1, 64, 8)])
def test_matmul_weight_formula(ctx, m, k, n):
    sw = L.setup_weight(ctx, np.zeros((k, n)))
    x = ctx.share(np.zeros((m, k)))
    assert _cost(ctx, lambda: L.matmul_weight(ctx, x, sw)) == (8 * m * k, 0, 1, 8 * m * n)
    assert _cost(ctx, lambda: L.linear(ctx, x, sw)) == (8 * m * k + 8 * m * n, 8 * m * n, 2, 8 * m * n + 16 * m * n)
    # several weights on one input: x is masked and sent once, one truncation exchange
    sw2 = L.setup_weight(ctx, np.zeros((k, 3)))
    assert _cost(ctx, lambda: L.linear_many(ctx, x, [(sw, None), (sw2, None)])) == (
        8 * m * k + 8 * m * (n + 3), 8 * m * (n + 3), 2, 8 * m * (n + 3) + 16 * m * (n + 3))


@pytest.mark.parametrize("bits", [64, 40, 16])
def test_comparison_formulas(bits):
    ctx = mpc.Context(mpc.MPCConfig(compare_bits=bits), seed=b"cmp-ledger")
    n = 100
    x = ctx.share(np.zeros(n))
    levels = math.ceil(math.log2(bits - 1))
    word = math.ceil(bits / 8)
    msb_bytes = 4 * levels * word * n
    assert _cost(ctx, lambda: C.msb(ctx, x))[:3] == (msb_bytes, msb_bytes, 1 + levels)
    sel = 8 * n + math.ceil(n / 8)
    assert _cost(ctx, lambda: C.relu(ctx, x))[:3] == (msb_bytes + sel, msb_bytes + sel, 2 + levels)
    b = C.msb(ctx, x)
    assert _cost(ctx, lambda: C.b2a(ctx, b))[:3] == (math.ceil(n / 8), math.ceil(n / 8), 1)
    if bits == 64:
        assert (msb_bytes, 1 + levels) == (192 * n, 7)


def test_secure_jit_counts_every_call_and_guards_plain_jit(ctx):
    f = mpc.secure_jit(lambda c, a, b: L.mul_fixed(c, a, b))
    x = ctx.share(np.ones(10))
    mark = ctx.ledger.snapshot()
    for _ in range(3):
        f(ctx, x, x)
    t = ctx.ledger.since(mark).totals()
    assert (t.bytes0, t.rounds) == (3 * 240, 6)
    import jax
    with pytest.raises(RuntimeError, match="secure_jit"):
        jax.jit(lambda a: L.mul(ctx, a, a).v)(x)


def test_network_model():
    led = mpc.Ledger()
    led.record("a", 1_000_000, 500_000, 3)
    led.record("b", 0, 0, 0, kind="dealer")
    lan, wan = mpc.network("lan"), mpc.network("wan")
    assert lan.seconds(led) == pytest.approx(3 * 0.010 + 8e6 / 1e9)
    assert wan.seconds(led) == pytest.approx(3 * 0.040 + 8e6 / 400e6)
    assert mpc.network("dc").latency_s == pytest.approx(0.2e-3)
    custom = mpc.network("custom:100:5")
    assert (custom.bandwidth_bps, custom.latency_s) == (100e6, 5e-3)
    with pytest.raises(ValueError):
        mpc.network("moon")


def test_scopes_label_entries(ctx):
    x = ctx.share(np.ones(4))
    with ctx.ledger.scope("layer0"):
        with ctx.ledger.scope("mlp"):
            L.square(ctx, x)
    assert ctx.ledger.entries[-1].op == "layer0/mlp/square"
    assert ctx.ledger.by_op(depth=1)["layer0"].rounds == 1
