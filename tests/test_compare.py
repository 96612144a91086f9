"""Comparison family against numpy references, including edge values and range limits."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpc
from mpc.protocols import compare as C


@pytest.fixture(params=[64, 40], ids=lambda b: f"l{b}")
def ctx(request):
    return mpc.Context(mpc.MPCConfig(compare_bits=request.param), seed=b"cmp")


def _open_bits(ctx, b):
    return np.asarray(ctx.channel.open("t", b)) & np.uint64(1)


def _edges(ctx):
    """Ring values around 0 and the comparison's range limit 2^(ℓ−1)."""
    lim = 2 ** (ctx.config.compare_bits - 1) - 1
    return np.array([0, 1, -1, 2, -2, lim, -lim, lim - 1, -lim - 1, 2**16, -(2**16)], np.int64)


def _share_ring(ctx, v):
    return ctx.share_ring(np.asarray(v, np.int64).astype(np.uint64), frac=16)


def test_msb_edges_and_random(ctx):
    rng = np.random.default_rng(0)
    lim = 2 ** (ctx.config.compare_bits - 1)
    v = np.concatenate([_edges(ctx), rng.integers(-lim, lim, size=2000, dtype=np.int64)])
    bits = _open_bits(ctx, C.msb(ctx, _share_ring(ctx, v)))
    np.testing.assert_array_equal(bits, (v < 0).astype(np.uint64))


@pytest.mark.parametrize("bits", [8, 9, 11, 13, 16, 21, 22, 32, 33])
def test_msb_lane_packed_widths(bits):
    """Kogge-Stone packs ⌊64/ℓ⌋ ℓ-bit lanes per word: every width's lanes stay apart
    (edges ±(2^(ℓ−1) − 1), 0, −1 next to each other in one word, and an element count
    that leaves the last word part-filled)."""
    ctx = mpc.Context(seed=b"lanes")
    lim = 2 ** (bits - 1)
    rng = np.random.default_rng(bits)
    edges = np.array([lim - 1, -lim, -1, 0, 1, -lim + 1, lim - 2, -2], np.int64)
    v = np.concatenate([edges, rng.integers(-lim, lim, size=3 * 67 - len(edges), dtype=np.int64)]).reshape(3, 67)
    got = _open_bits(ctx, C.msb(ctx, _share_ring(ctx, v), bits=bits))
    np.testing.assert_array_equal(got, (v < 0).astype(np.uint64))


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=30))
def test_relu_property(xs):
    ctx = mpc.Context(seed=b"relu")
    x = np.resize(np.asarray(xs), 30)  # one shape: no recompilation per example
    fp = ctx.config.fixed
    xq = np.asarray(fp.decode(fp.encode(x)))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(C.relu(ctx, ctx.share(x)))), np.maximum(xq, 0))


def test_lt_select_b2a(ctx):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=300) * 100, rng.normal(size=300) * 100
    y[:3] = x[:3]  # equal values: x < y is false
    y[3] = x[3] + 2**-16  # one ulp apart
    X, Y = ctx.share(x), ctx.share(y, owner=mpc.SERVER)
    fp = ctx.config.fixed
    xq, yq = np.asarray(fp.decode(fp.encode(x))), np.asarray(fp.decode(fp.encode(y)))
    b = C.lt(ctx, X, Y)
    np.testing.assert_array_equal(_open_bits(ctx, b), (xq < yq).astype(np.uint64))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(C.select(ctx, b, X, Y))), np.minimum(xq, yq))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(C.b2a(ctx, b))), (xq < yq).astype(np.int64))
