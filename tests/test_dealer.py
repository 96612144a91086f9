"""The dealer alone: reconstructed correlations hold exactly mod 2^64; randomness is fresh."""

import numpy as np
import pytest

import mpc
from mpc.ring import msb, ring_matmul
from mpc.shares import Shared, XorShared


def _open(x):
    return np.asarray(x.v[0] ^ x.v[1]) if isinstance(x, XorShared) else np.asarray(x.v[0] + x.v[1])


@pytest.fixture
def ctx():
    return mpc.Context(seed=b"dealer-test")


def test_triples(ctx):
    a, b, c = ctx.dealer.triple((7, 5))
    np.testing.assert_array_equal(_open(a) * _open(b), _open(c))
    a, c = ctx.dealer.square_pair((9,))
    np.testing.assert_array_equal(_open(a) * _open(a), _open(c))
    a, b, c = ctx.dealer.matmul_triple((3, 6), (6, 4))
    np.testing.assert_array_equal(np.asarray(ring_matmul(_open(a), _open(b))), _open(c))


def test_weight_triple(ctx):
    drawn = [ctx.dealer.weight_mask((6, 4)), ctx.dealer.weight_mask((6, 2))]
    masks, handles = [m for m, _ in drawn], [h for _, h in drawn]
    a, cs = ctx.dealer.weight_triple(masks, handles, (3, 6), mask_shapes=[(6, 4), (6, 2)], transposed=[0, 0])
    for mask, c in zip(masks, cs):
        np.testing.assert_array_equal(np.asarray(ring_matmul(np.asarray(a), np.asarray(mask))), _open(c))


@pytest.mark.parametrize("bits", [1, 16, 40])
def test_trunc_pair(ctx, bits):
    r, r_hi, r_msb = ctx.dealer.trunc_pair((1000,), bits)
    rv = _open(r)
    np.testing.assert_array_equal(_open(r_hi), rv >> np.uint64(bits))
    np.testing.assert_array_equal(_open(r_msb), np.asarray(msb(rv)))


def test_boolean_material(ctx):
    a, b, c = ctx.dealer.and_triple((50,))
    np.testing.assert_array_equal(_open(a) & _open(b), _open(c))
    r_xor, r = ctx.dealer.bit_pair((50,))
    assert set(np.unique(_open(r_xor))) <= {0, 1}
    np.testing.assert_array_equal(_open(r_xor), _open(r))
    r_xor, r, a, ra = ctx.dealer.bit_select_quad((50,))
    np.testing.assert_array_equal(_open(r_xor), _open(r))
    np.testing.assert_array_equal(_open(r) * _open(a), _open(ra))


def test_shares_look_uniform_and_are_fresh(ctx):
    a1, _, _ = ctx.dealer.triple((4096,))
    a2, _, _ = ctx.dealer.triple((4096,))
    s = np.asarray(a1.v[1])
    assert not np.array_equal(np.asarray(a1.v[0]), np.asarray(a2.v[0]))
    # every bit position of uniform words is set about half the time
    bits = (s[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.05)


def test_fresh_randomness_inside_secure_jit(ctx):
    @mpc.secure_jit
    def draw(c, x):
        a, _, _ = c.dealer.triple(x.shape)
        return x + a.with_frac(x.frac)

    x = ctx.share(np.zeros(8))
    assert not np.array_equal(np.asarray(draw(ctx, x).v), np.asarray(draw(ctx, x).v))


def test_seeded_dealer_is_reproducible():
    t1 = mpc.Context(seed=b"s").dealer.triple((5,))
    t2 = mpc.Context(seed=b"s").dealer.triple((5,))
    t3 = mpc.Context().dealer.triple((5,))
    assert np.array_equal(np.asarray(t1[2].v), np.asarray(t2[2].v))
    assert not np.array_equal(np.asarray(t1[2].v), np.asarray(t3[2].v))


def test_shared_has_no_truth_value_and_hides_values(ctx):
    x = ctx.share(np.ones(3))
    with pytest.raises(TypeError):
        bool(x)
    assert "Shared(shape=(3,)" in repr(x) and "uint64" not in repr(x)
    with pytest.raises(ValueError, match="scale"):
        _ = x + Shared(x.v, frac=0)
