"""Arithmetic in the ring Z_2^64 on uint64 arrays.

Addition, subtraction and multiplication of `uint64` arrays wrap modulo 2^64 natively;
this module adds what the hardware does not give for free:

* `ring_matmul`: an exact matrix product mod 2^64. XLA's integer dot on CPU is
  single-threaded and ~50x slower than a float64 GEMM, so the product is assembled from
  fast dots on limbs (see the function's docstring); the result is bit-identical to
  numpy's uint64 matmul.
* conversions between the ring and signed integers (two's complement).

Everything here is a pure function, usable under `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

RING_BITS = 64
DTYPE = jnp.uint64

_HI = jax.lax.Precision.HIGHEST


def to_ring(x: jax.Array) -> jax.Array:
    """Reinterpret signed int64 (two's complement) as ring elements."""
    return jnp.asarray(x).astype(jnp.int64).astype(DTYPE)


def to_signed(x: jax.Array) -> jax.Array:
    """Ring elements as signed int64 in [-2^63, 2^63)."""
    return jnp.asarray(x, DTYPE).astype(jnp.int64)


def msb(x: jax.Array) -> jax.Array:
    """Most significant bit (the sign in two's complement) as uint64 0/1."""
    return jnp.asarray(x, DTYPE) >> 63


def _f64_to_ring(x: jax.Array) -> jax.Array:
    # Exact for integer-valued float64 with |x| < 2^63.
    return x.astype(jnp.int64).astype(DTYPE)


def ring_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Exact `a @ b` mod 2^64 for uint64 operands, with `jnp.matmul` broadcasting.

    Write a = a_lo + 2^32·a_hi and a_lo = a_0 + 2^16·a_1 (16-bit limbs), likewise b. Then
    mod 2^64:

        a·b = a_0·b_0 + 2^16·(a_0·b_1 + a_1·b_0) + 2^32·(a_1·b_1 + a_lo·b_hi + a_hi·b_lo)

    * The terms at 2^0 and 2^16 need 64 resp. 48 exact bits: float64 dots of 16-bit limbs,
      with Karatsuba for the middle term, a_0·b_1 + a_1·b_0 = (a_0+a_1)(b_0+b_1) − a_0·b_0
      − a_1·b_1. Each summand is < 2^34, so every partial sum is an exact float64 integer
      while the contraction length k < 2^19.
    * The term at 2^32 is only needed mod 2^32: one int32 dot of the concatenated operands
      (contraction 2k), whose wrap-around is exactly that reduction, plus a_1·b_1 from
      above.

    Cost: 3 float64 dots of length k and one int32 dot of length 2k, i.e. about five
    float64 GEMMs (measured ~4.3x a float64 matmul and ~13x faster than XLA's uint64 dot on
    512x768 @ 768x768, see `pspec bench mpc`).
    """
    a = jnp.asarray(a, DTYPE)
    b = jnp.asarray(b, DTYPE)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"ring_matmul needs operands of rank >= 2, got {a.shape} @ {b.shape}")
    k = a.shape[-1]
    if b.shape[-2] != k:
        raise ValueError(f"ring_matmul contraction mismatch: {a.shape} @ {b.shape}")
    if k >= 1 << 19:
        raise ValueError(f"ring_matmul contraction length {k} >= 2^19 would lose exactness")

    a_lo, a_hi = a.astype(jnp.uint32), (a >> 32).astype(jnp.uint32)
    b_lo, b_hi = b.astype(jnp.uint32), (b >> 32).astype(jnp.uint32)
    a0, a1 = (a_lo & 0xFFFF).astype(jnp.float64), (a_lo >> 16).astype(jnp.float64)
    b0, b1 = (b_lo & 0xFFFF).astype(jnp.float64), (b_lo >> 16).astype(jnp.float64)

    p00 = _f64_to_ring(jnp.matmul(a0, b0, precision=_HI))
    p11 = _f64_to_ring(jnp.matmul(a1, b1, precision=_HI))
    p_sum = _f64_to_ring(jnp.matmul(a0 + a1, b0 + b1, precision=_HI))
    cross = jnp.matmul(  # wraps mod 2^32 by construction
        jnp.concatenate([a_lo, a_hi], axis=-1).astype(jnp.int32),
        jnp.concatenate([b_hi, b_lo], axis=-2).astype(jnp.int32),
    )
    middle = p_sum - p00 - p11
    high = p11 + cross.astype(jnp.uint32).astype(DTYPE)
    return p00 + (middle << 16) + (high << 32)


def small_bound(shape: tuple[int, ...]) -> int:
    """The largest |w| for which `ring_matmul_small` is exact with a matrix of this shape:
    a 16-bit limb times w, summed over the contraction length k, must stay an exact
    float64 integer, (2^16 − 1)·|w|·k < 2^53. k is the larger dimension, so the bound
    holds for the matrix and its transpose (a tied LM head). 2^21.4 for SmolLM2's
    49152 × 576 embedding; 2^26.4 for a 576 × 1536 layer."""
    k = max(shape)
    return (2**53 - 1) // (0xFFFF * k)


def small_operand(w: jax.Array) -> jax.Array | None:
    """The float64 form of a ring matrix whose entries are small signed integers
    (|w| ≤ `small_bound`), for `ring_matmul_small`; None if some entry is too large."""
    w_int = to_signed(w)
    if bool(jnp.max(jnp.abs(w_int)) > small_bound(w.shape)):
        return None
    return w_int.astype(jnp.float64)


def ring_matmul_small(a: jax.Array, w_small: jax.Array) -> jax.Array:
    """Exact `a @ w` mod 2^64 for uint64 `a` (..., m, k) and a matrix of small signed
    integers `w_small` (k, n) given as float64 (or float32 where exact; see `small_operand`).

    With 16-bit limbs a = Σ_i 2^(16i)·a_i, each a_i @ w is an exact float64 integer (its
    terms' sum stays below 2^53: `small_bound`), so a @ w = Σ_i 2^(16i)·(a_i @ w) mod 2^64.
    The four limb products run as ONE dot of a (4·m, k) stack — for the few rows of a
    decoding step that reads w once instead of four times. A server's plain weight is such
    a matrix.
    """
    a = jnp.asarray(a, DTYPE)
    limbs = jnp.stack([((a >> (16 * i)) & 0xFFFF).astype(jnp.float64) for i in range(4)])  # (4, ..., m, k)
    prods = jnp.matmul(limbs, w_small, precision=_HI)  # (4, ..., m, n)
    out = _f64_to_ring(prods[0])
    for i in range(1, 4):
        out = out + (_f64_to_ring(prods[i]) << (16 * i))
    return out
