"""Fixed-point encoding of reals into Z_2^64.

A real x is stored as the ring element round(x · 2^f) (two's complement), f fractional
bits (default 16). Representable range: |x| < 2^(63−f) (≈ 1.4e14 for f = 16); products
are computed at scale 2^(2f) before truncation, so operands of a product must keep
|x·y| < 2^(62−2f) (≈ 1.1e9 at f = 16) — the truncation protocol is exact only for
|value| < 2^62 in the ring. Resolution (one ulp) is 2^−f (≈ 1.5e−5 at f = 16).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mpc.ring import DTYPE, to_signed


@dataclasses.dataclass(frozen=True)
class FixedPoint:
    """Fixed-point format: `frac_bits` fractional bits in the 64-bit ring."""

    frac_bits: int = 16

    def __post_init__(self):
        if not 1 <= self.frac_bits <= 30:
            raise ValueError(f"frac_bits must be in [1, 30], got {self.frac_bits}")

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def ulp(self) -> float:
        return 1.0 / self.scale

    @property
    def max_abs(self) -> float:
        """Largest magnitude that encodes without wrapping."""
        return float(2 ** (63 - self.frac_bits))

    def encode(self, x) -> jax.Array:
        """Reals -> ring elements, round-to-nearest. Values outside the range raise."""
        x = np.asarray(x, dtype=np.float64) if not isinstance(x, jax.Array) else x
        if not isinstance(x, jax.core.Tracer):
            bad = np.abs(np.asarray(x)) >= self.max_abs
            if np.any(bad):
                raise ValueError(f"fixed-point overflow: |x| >= {self.max_abs:g} at f={self.frac_bits}")
        return jnp.round(jnp.asarray(x, jnp.float64) * self.scale).astype(jnp.int64).astype(DTYPE)

    def decode(self, x: jax.Array) -> jax.Array:
        """Ring elements at this format's scale -> float64."""
        return decode(x, self.frac_bits)


def decode(x: jax.Array, frac_bits: int) -> jax.Array:
    """Ring elements at scale 2^frac_bits (any, e.g. an untruncated product) -> float64."""
    return to_signed(x).astype(jnp.float64) / float(2**frac_bits)
