"""Linear protocols against float64 / exact ring references, random and edge inputs."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpc
from mpc.fixed import FixedPoint
from mpc.protocols import compare as C
from mpc.protocols import linear as L

ULP = 2.0**-16


@pytest.fixture(params=[16, 20], ids=lambda f: f"f{f}")
def ctx(request):
    return mpc.Context(mpc.MPCConfig(fixed=FixedPoint(request.param)), seed=b"linear")


def _ulp(ctx):
    return 2.0 ** -ctx.config.frac_bits


def _q(ctx, x):
    """The fixed-point value a real encodes to (so references isolate protocol error)."""
    fp = ctx.config.fixed
    return np.array(fp.decode(fp.encode(x)))


def edge_values(ctx, limit):
    u = _ulp(ctx)
    return np.array([0.0, u, -u, 1.0, -1.0, limit, -limit, limit - u, -(limit - u)])


def test_mul_exact_and_truncated(ctx):
    rng = np.random.default_rng(0)
    x, y = _q(ctx, rng.normal(size=(64,)) * 50), _q(ctx, rng.normal(size=(64,)) * 50)
    x[:9], y[:9] = edge_values(ctx, 1000.0), edge_values(ctx, 1000.0)[::-1]
    X, Y = ctx.share(x), ctx.share(y, owner=mpc.SERVER)
    f = ctx.config.frac_bits
    raw = L.mul(ctx, X, Y)
    assert raw.frac == 2 * f
    np.testing.assert_allclose(np.asarray(ctx.reveal(raw)), x * y, atol=0, rtol=0)
    err = np.abs(np.asarray(ctx.reveal(L.mul_fixed(ctx, X, Y))) - x * y)
    assert err.max() < _ulp(ctx)


def test_square_and_mul_const(ctx):
    x = _q(ctx, np.linspace(-300, 300, 101))
    X = ctx.share(x)
    np.testing.assert_array_equal(np.asarray(ctx.reveal(L.square(ctx, X))), x * x)
    c = _q(ctx, np.linspace(-2, 2, 101))
    assert np.abs(np.asarray(ctx.reveal(L.mul_const(ctx, X, c))) - x * c).max() < _ulp(ctx)


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([(1, 1, 1), (2, 8, 3), (4, 24, 5)]), st.integers(0, 2**31))
def test_matmul_shared_shared_property(mkn, seed):
    m, k, n = mkn
    ctx = mpc.Context(seed=b"mm")
    rng = np.random.default_rng(seed)
    x, y = _q(ctx, rng.normal(size=(m, k)) * 8), _q(ctx, rng.normal(size=(k, n)) * 8)
    z = L.matmul(ctx, ctx.share(x), ctx.share(y, owner=mpc.SERVER))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(z)), x @ y)  # exact before truncation


def test_batched_matmul_heads(ctx):
    rng = np.random.default_rng(1)
    q, k = _q(ctx, rng.normal(size=(3, 5, 8))), _q(ctx, rng.normal(size=(3, 8, 7)))
    z = L.truncate(ctx, L.matmul(ctx, ctx.share(q), ctx.share(k)), ctx.config.frac_bits)
    assert np.abs(np.asarray(ctx.reveal(z)) - q @ k).max() < _ulp(ctx)


def test_server_weight_products(ctx):
    rng = np.random.default_rng(2)
    w, x = _q(ctx, rng.normal(size=(24, 10))), _q(ctx, rng.normal(size=(2, 3, 24)) * 4)
    sw = L.setup_weight(ctx, w)
    X = ctx.share(x)
    np.testing.assert_array_equal(np.asarray(ctx.reveal(L.matmul_weight(ctx, X, sw))), x @ w)
    bias = _q(ctx, rng.normal(size=(10,)))
    y = L.linear(ctx, X, sw, bias=ctx.config.fixed.encode(bias))
    assert np.abs(np.asarray(ctx.reveal(y)) - (x @ w + bias)).max() < _ulp(ctx)
    g = _q(ctx, rng.normal(size=(24,)))
    z = L.mul_weight(ctx, X, L.setup_weight(ctx, g))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(z)), x * g)


def test_weight_mask_is_opened_once_per_session():
    ctx = mpc.Context(seed=b"setup")
    sw = L.setup_weight(ctx, np.ones((16, 4)))
    X = ctx.share(np.ones((2, 16)))
    for _ in range(3):
        L.matmul_weight(ctx, X, sw)
    setup = ctx.ledger.totals("setup")
    assert (setup.bytes0, setup.bytes1, setup.messages) == (0, 8 * 16 * 4, 1)


def test_truncate_edges_and_range_limits(ctx):
    f = ctx.config.frac_bits
    lim = 2**62 - 1  # ring units
    ring = np.array([0, 1, -1, 2**f, -(2**f), 2**f - 1, -(2**f) + 1, lim, -lim, 2**61, -(2**61), 12345678901],
                    dtype=np.int64)
    X = mpc.Shared.from_parties(*_split(ring.astype(np.uint64), seed=3), frac=2 * f)
    got = np.asarray(ctx.channel.open("t", L.truncate(ctx, X, f))).astype(np.int64)
    floor = ring >> f
    assert np.all((got == floor) | (got == floor + 1)), (got - floor)


def _split(v, seed):
    r = np.random.default_rng(seed).integers(0, 2**64, size=v.shape, dtype=np.uint64)
    return v - r, r


@pytest.mark.parametrize("chunk", [2_500_000])
def test_truncate_ten_million_elements(chunk):
    """≥ 10^7 truncations over the whole documented range: no error above 1 ulp."""
    ctx = mpc.Context(seed=b"trunc10m")
    trunc = mpc.secure_jit(lambda c, x: L.truncate(c, x, 16))
    rng = np.random.default_rng(4)
    worst, total = 0, 0
    for i in range(4):
        scale = [2**20, 2**40, 2**61, 2**62 - 1][i]
        v = rng.integers(-scale, scale, size=chunk, dtype=np.int64)
        x = mpc.Shared.from_parties(*_split(v.astype(np.uint64), seed=10 + i), frac=32)
        got = np.asarray(ctx.channel.open("t", trunc(ctx, x))).astype(np.int64)
        d = got - (v >> 16)
        assert np.all((d == 0) | (d == 1)), f"max error {np.abs(d).max()} ulp"
        worst, total = max(worst, int(d.max())), total + chunk
    assert total >= 10**7 and worst <= 1


def test_masked_once_operand_matmul():
    ctx = mpc.Context(seed=b"masked")
    rng = np.random.default_rng(5)
    x, y = _q(ctx, rng.normal(size=(2, 3, 8))), _q(ctx, rng.normal(size=(2, 8, 5)))
    (Y,) = L.mask_once(ctx, [ctx.share(y, owner=mpc.SERVER)])
    np.testing.assert_array_equal(np.asarray(ctx.reveal(Y.value())), y)
    mark = ctx.ledger.snapshot()
    z = L.matmul_masked(ctx, ctx.share(x), Y)
    t = ctx.ledger.since(mark).totals()
    assert (t.bytes0, t.bytes1, t.rounds) == (8 * x.size, 8 * x.size, 1)  # y is not reopened
    np.testing.assert_array_equal(np.asarray(ctx.reveal(z)), x @ y)
    zt = L.matmul_masked(ctx, ctx.share(x[:, :, :5]), Y.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.asarray(ctx.reveal(zt)), x[:, :, :5] @ y.transpose(0, 2, 1))


def test_truncate_products_exact_given_the_truncation(ctx):
    """`truncate_products`: y as `truncate` (⌊z/2^f⌋ or one more, edge values up to 2^62
    included), and every carried product exact in the ring given y — partners of the
    entry shape and a row partner broadcast against per-row entries, squares, cross
    products, selections — in one round, with the documented bytes per party."""
    f = ctx.config.frac_bits
    lim = 2**62 - 1
    edges = np.array([0, 1, -1, 2**f, -(2**f), lim, -lim, 2**61, -(2**61), 12345678901, -987654321, 7],
                     dtype=np.int64)
    rng = np.random.default_rng(11)
    z_ring = np.stack([edges, rng.integers(-2**40, 2**40, size=edges.shape)]).reshape(2, 3, 4)  # (S=2, 3, 4)
    Z = mpc.Shared.from_parties(*_split(z_ring.astype(np.uint64), seed=5), frac=2 * f)
    w_ring = rng.integers(-2**30, 2**30, size=(3, 4))
    W = mpc.Shared.from_parties(*_split(w_ring.astype(np.uint64), seed=6), frac=f)
    row_ring = rng.integers(-2**30, 2**30, size=(3, 4, 5))  # a row partner for per-row entries
    bits = (rng.integers(0, 2, size=(3, 4)) == 1)
    B = C.msb(ctx, ctx.share(np.where(bits, -1.0, 1.0)))  # XOR bit = bits

    mark = ctx.ledger.snapshot()
    out = L.truncate_products(ctx, Z, f, partners=[(0, W), (1, W)], pairs=[(0, 0), (0, 1), (1, 1)],
                              selects=[(1, B)])
    t = ctx.ledger.since(mark).totals()
    n = 12
    assert (t.rounds, t.bytes0, t.bytes1) == (1, 8 * 2 * n + 8 * 2 * n + 2, 8 * 2 * n + 8 * 2 * n + 2)

    def ring(x):
        return np.asarray(ctx.channel.open("t", x)).astype(np.uint64)

    y = ring(out.y)
    floor = z_ring >> f
    assert np.all((y.astype(np.int64) == floor) | (y.astype(np.int64) == floor + 1))
    w = w_ring.astype(np.uint64)
    with np.errstate(over="ignore"):
        assert np.array_equal(ring(out.partners[0]), y[0] * w) and np.array_equal(ring(out.partners[1]), y[1] * w)
        assert np.array_equal(ring(out.pairs[0]), y[0] * y[0])
        assert np.array_equal(ring(out.pairs[1]), y[0] * y[1])
        assert np.array_equal(ring(out.pairs[2]), y[1] * y[1])
        assert np.array_equal(ring(out.selects[0]), np.where(bits, y[1], np.uint64(0)))
        # a row partner: entries (S, 3, 4, 1) broadcast against rows (3, 4, 5)
        R = mpc.Shared.from_parties(*_split(row_ring.astype(np.uint64), seed=7), frac=f)
        rows = L.truncate_products(ctx, Z[..., None], f, partners=[(1, R)])
        y1 = ring(rows.y)[1]
        assert np.array_equal(ring(rows.partners[0]), y1 * row_ring.astype(np.uint64))
