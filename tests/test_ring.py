"""Ring arithmetic and fixed point against numpy / float64 references."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mpc  # noqa: F401  (enables 64-bit JAX types)
from mpc.fixed import FixedPoint
from mpc.ring import msb, ring_matmul, to_ring, to_signed

U64_MAX = np.uint64(2**64 - 1)


def _rand(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 576, 16), (17, 33, 9), (64, 3000, 8), (2, 3, 4, 5)])
def test_ring_matmul_bit_identical_random(shape):
    rng = np.random.default_rng(sum(shape))
    *batch, m, k, n = shape if len(shape) == 4 else (None, *shape)
    a_shape = (shape[0], shape[1], shape[2]) if len(shape) == 4 else (m, k)
    b_shape = (shape[2], shape[3]) if len(shape) == 4 else (k, n)
    a, b = _rand(rng, a_shape), _rand(rng, b_shape)
    np.testing.assert_array_equal(np.asarray(ring_matmul(a, b)), np.matmul(a, b))


@pytest.mark.parametrize("k", [1, 768, 4096])
def test_ring_matmul_all_ones_and_extremes(k):
    ones = np.full((3, k), U64_MAX, np.uint64)
    np.testing.assert_array_equal(np.asarray(ring_matmul(ones, ones.T.copy())), ones @ ones.T)
    top = np.full((2, k), np.uint64(2**63), np.uint64)
    mixed = np.tile(np.array([0, 1, U64_MAX, 2**32 - 1, 2**32, 2**48 + 7], np.uint64), k)[:k]
    np.testing.assert_array_equal(np.asarray(ring_matmul(top, mixed[:, None])), top @ mixed[:, None])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 7, 40]), st.integers(1, 3), st.integers(0, 2**32))
def test_ring_matmul_property(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = _rand(rng, (m, k)), _rand(rng, (k, n))
    np.testing.assert_array_equal(np.asarray(ring_matmul(a, b)), a @ b)


def test_ring_matmul_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ring_matmul(np.zeros((2, 3), np.uint64), np.zeros((4, 2), np.uint64))
    with pytest.raises(ValueError):
        ring_matmul(np.zeros((3,), np.uint64), np.zeros((3, 2), np.uint64))


def test_wraparound_and_sign():
    x = jnp.asarray([U64_MAX, 0, 2**63], jnp.uint64)
    np.testing.assert_array_equal(np.asarray(x + jnp.uint64(1)), [0, 1, 2**63 + 1])
    np.testing.assert_array_equal(np.asarray(to_signed(x)), [-1, 0, -(2**63)])
    np.testing.assert_array_equal(np.asarray(to_ring(np.array([-1, 5]))), [2**64 - 1, 5])
    np.testing.assert_array_equal(np.asarray(msb(x)), [1, 0, 1])


@pytest.mark.parametrize("frac", [8, 16, 24])
def test_fixed_point_roundtrip(frac):
    fp = FixedPoint(frac)
    ulp = fp.ulp
    edge = np.array([0.0, ulp, -ulp, 0.5 * ulp - 1e-12, 1.0, -1.0, fp.max_abs * 0.999, -fp.max_abs * 0.999])
    rand = np.random.default_rng(frac).normal(size=1000) * 1e3
    for x in (edge, rand):
        np.testing.assert_allclose(np.asarray(fp.decode(fp.encode(x))), x, atol=0.5 * ulp, rtol=0)


def test_fixed_point_overflow_raises():
    fp = FixedPoint(16)
    with pytest.raises(ValueError, match="overflow"):
        fp.encode(np.array([fp.max_abs]))
    with pytest.raises(ValueError):
        FixedPoint(0)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 576, 16), (2, 3000, 4)])
def test_ring_matmul_small_operand(m, k, n):
    from mpc.ring import ring_matmul_small, small_bound, small_operand

    rng = np.random.default_rng(k)
    a = _rand(rng, (m, k))
    lim = small_bound((k, n))  # (2^16 − 1)·lim·k < 2^53: the largest exact weight entries
    assert 0xFFFF * lim * k < 2**53 <= 0xFFFF * (lim + 1) * k
    a[0] = np.uint64(0xFFFF_FFFF_FFFF_FFFF)  # every limb of row 0 at its largest: the worst case with w[:, 0]
    w = rng.integers(-lim, lim + 1, size=(k, n))
    w[:, 0], w[-1, -1] = lim, -lim
    w_ring = w.astype(np.int64).astype(np.uint64)
    np.testing.assert_array_equal(np.asarray(ring_matmul_small(a, small_operand(w_ring))), a @ w_ring)
    w_ring[0, 0] = np.uint64(lim + 1)
    assert small_operand(w_ring) is None
