"""Approximation parameters of the nonlinear protocols: one frozen config.

Every number a nonlinear protocol uses to approximate a real function (breakpoints,
polynomial coefficients, clip bounds, comparison widths, working precisions) lives in
`NonlinearConfig`, a field of `mpc.MPCConfig` (static under jit). The protocols in
`mpc.protocols.nonlinear` / `softmax` / `norm` / `sampling` read it from `ctx.config`.

Coefficients were fitted with `fit_poly` (near-minimax, Lawson's iteratively reweighted
least squares on Chebyshev nodes); `_fit_defaults()` regenerates every tuple below and
prints its fitted error, so a change of breakpoints is one call away. Errors quoted are the
fit's sup-norm error on its interval; protocol-level errors (with fixed-point rounding) are
measured by the tests and by `pspec_jax.benchmarks.nonlinear`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class CoarseCompare:
    """How a batch of comparisons looks at its inputs, in real units (independent of the
    fixed-point scale).

    `resolution_log2` r: both parties drop the low bits of their shares below 2^r
    (`mpc.protocols.nonlinear.coarse_lt`); the comparison of x with a threshold t is then
    exact unless t ≤ x < t + 2^r, and it is transitive between elements (each element's
    coarse view is one fixed value). None: exact to the last bit.
    `range_log2` R: inputs keep |x − t| < 2^R − 2^r. None: the whole ring (64 bits).
    At scale 2^frac this examines bits = R + frac − drop + 1 bits (at least 8) above
    drop = frac + r dropped ones; msb rounds 1 + ⌈log2(bits − 1)⌉.
    """

    range_log2: int | None = None
    resolution_log2: int | None = None

    def params(self, frac: int) -> tuple[int, int]:
        """(bits, drop) for inputs at scale 2^frac."""
        drop = 0 if self.resolution_log2 is None else max(0, frac + self.resolution_log2)
        bits = 64 - drop if self.range_log2 is None else max(8, self.range_log2 + frac - drop + 1)
        if bits + drop > 64:
            raise ValueError(f"CoarseCompare: range 2^{self.range_log2} at scale 2^{frac} needs {bits} bits "
                             f"above {drop} dropped ones (> 64)")
        return bits, drop


@dataclasses.dataclass(frozen=True)
class SymmetricPiecewise:
    """f(x) = lin_a·x + lin_c + h(x) on |x| < 2^clip_log2, with h even (parity +1) or
    odd (parity −1) and h(x) = sign(x)^[odd] · H_k(|x| / 2^clip_log2) on segment k of |x|
    (breakpoints `breaks`); right tail (x ≥ 2^clip_log2) = right_a·x + right_c, left tail
    (x < −2^clip_log2) = left_a·x + left_c. `segments[k]` are H_k's coefficients, powers 0..d
    of s = |x|/2^clip_log2 ∈ [0, 1].

    GeLU and SiLU are 0.5·x plus an even function; sigmoid is 0.5 plus an odd one, so one
    polynomial per |x|-segment serves both signs and every segment shares the same powers
    of x (no extra rounds per segment, only a few more comparisons and selections).
    """

    clip_log2: int
    breaks: tuple[float, ...]
    segments: tuple[tuple[float, ...], ...]
    lin_a: float = 0.5
    lin_c: float = 0.0
    parity: int = 1
    right_a: float = 1.0
    right_c: float = 0.0
    left_a: float = 0.0
    left_c: float = 0.0

    def __post_init__(self):
        if len(self.segments) != len(self.breaks) + 1:
            raise ValueError(f"{len(self.breaks)} breaks need {len(self.breaks) + 1} segments, got {len(self.segments)}")
        if list(self.breaks) != sorted(self.breaks) or any(not 0 < b < 2.0 ** self.clip_log2 for b in self.breaks):
            raise ValueError(f"breaks must increase inside (0, {2.0 ** self.clip_log2}): {self.breaks}")
        if self.parity not in (1, -1):
            raise ValueError(f"parity must be +1 or -1, got {self.parity}")


# --- fitted defaults (see _fit_defaults) -------------------------------------------------
# GeLU (tanh form) − 0.5x on |x| < 4, segments [0, 1.5), [1.5, 4): fit error 3.2e-4, 5.4e-4;
# tails: |gelu(x) − x| and |gelu(−x)| ≤ 1.3e-4 for x ≥ 4.
GELU = SymmetricPiecewise(
    clip_log2=2, breaks=(1.5,),
    segments=((0.0003182898122006121, -0.0419615978625123, 7.261199433210356, -6.221639558136256,
               -1.4241428688098763),
              (-0.47196171111009566, 3.468231589944248, -1.3809155274382312, 0.2148095682891653,
               0.17015224277528418)))
# SiLU − 0.5x on |x| < 16, segments [0, 2), [2, 5.5), [5.5, 16): fit error ≤ 5.5e-4; tails 1.8e-6.
SILU = SymmetricPiecewise(
    clip_log2=4, breaks=(2.0, 5.5),
    segments=((0.00031085816856734743, -0.12317987036122613, 71.76155224378557, -166.56153141822165,
               -78.56615248434919),
              (-0.31926548244716746, 6.833102305846213, 22.899350614114702, -77.44537168555321,
               81.49973065192899),
              (-0.30136983225135905, 9.66218701925569, -3.3980299069861166, 3.0439368668170683,
               -1.007115783956829)))
# sigmoid − 0.5 (odd) on |x| < 16, segments [0, 2), [2, 6), [6, 16): fit error ≤ 1.2e-4.
SIGMOID = SymmetricPiecewise(
    clip_log2=4, breaks=(2.0, 6.0), lin_a=0.0, lin_c=0.5, parity=-1, right_a=0.0, right_c=1.0,
    segments=((-3.0398213771363217e-05, 4.0043814020002575, 0.0936556959614469, -98.30817620780016,
               290.03022580461896),
              (-0.04894421322648735, 5.807303331298188, -24.24806661894844, 46.720251675062975,
               -34.647411638222735),
              (0.45018720932153694, 0.27599201416695257, -0.5651753766148365, 0.506273644924058,
               -0.1673385815735695)))
# exp(4w) for w ∈ [−1, 0.01], as a polynomial in t = w + 1/2 (degree 8): fit error 9.3e-7.
EXP = (0.1353355479956418, 0.5413252667009678, 1.0826401986785124, 1.4444014829856293, 1.4446550533470397,
       1.1433144607761057, 0.7602985348836949, 0.49925659909398834, 0.2540042158123353)
# 1/u and u^(−1/2) for u ∈ [1, 2.13], polynomials in t = u − 3/2 (degree 4): relative fit
# error 4.6e-4 and 1.1e-4.
RECIP = (0.6665012961175751, -0.44206855859775673, 0.3010406814364541, -0.23076977487418615, 0.12644804510906119)
RSQRT = (0.8164587622444839, -0.27140027915219456, 0.13722349297985018, -0.0858302559130841, 0.04308701691162651)


@dataclasses.dataclass(frozen=True)
class NonlinearConfig:
    """All approximation parameters of the nonlinear protocols (documented defaults).

    Activations (`gelu`, `silu`, `sigmoid`): `SymmetricPiecewise` specs; their comparisons
    use `act_compare` (|x| < 2^9 − 16 handled, breakpoints fuzzy by 2^−6, where neighbouring
    pieces agree to ~1e-4; 16 bits examined at f = 16: 5 rounds).

    exp (softmax): e^z for z ≤ 2^−5 computed as p(z/2^exp_scale_log2)^(2^exp_squarings),
    p = `exp_coeffs` in t = z/2^exp_scale_log2 + 1/2 approximating e^(z/2^exp_squarings);
    z < −exp_clip gives 0 (the comparison is coarse: `exp_compare`, fuzzy by 2 above the
    clip, where e^z < 1e-6). Working precision `exp_frac` fractional bits.

    reciprocal / rsqrt: x = u·2^j with the exponent j found by one batch of coarse
    comparisons against powers of two (relative fuzz 2^−`norm_tol_bits`, so u ∈
    [1, 2 + 2^(1 − norm_tol_bits))), then a polynomial in t = u − 3/2 (`recip_coeffs`,
    `rsqrt_coeffs`) evaluated at `poly_frac` bits, and an exact power-of-two correction.

    max (softmax, argmax): all pairs of a group of ≤ `max_group` elements compared in one
    batch, each element's wins counted, the unique element that beats all others (ties:
    the lowest index) selected. Softmax's max uses `softmax_max_compare` (coarse, within
    2^−5 of the true max: the shift cancels in softmax); `max`/`argmax` are exact at
    `argmax_compare` (24 bits: |x_i − x_j| < 128 at f = 16).
    Over a vocabulary (sampling, POST's rejection), the shift of exp is a tree max with
    small groups (`vocab_max_group`, `vocab_max_compare`): all-pairs comparisons cost
    (g − 1)/2 per entry, so small groups trade a few rounds for most of the bytes (at
    V = 49,152: 6 levels, ~2 MB per row instead of ~29 MB with groups of 37).

    Norms: variances are expected in [`norm_var_lo`, `norm_var_hi`] (rsqrt's domain is
    n·that range); below it the output error grows, all-equal rows give exactly β.

    Sampling: u has `sample_u_bits` random bits from both parties' own randomness;
    comparisons use `sample_compare` (exact). `logit_spread` is the widest max − min of a
    logits row the vocabulary protocols must handle (calibrated per model,
    `pspec_jax.secure.ranges`): `argmax_compare` must cover it, and it bounds the
    sampling temperature from below (`mpc.protocols.sampling.min_temperature`).
    """

    gelu: SymmetricPiecewise = GELU
    silu: SymmetricPiecewise = SILU
    sigmoid: SymmetricPiecewise = SIGMOID
    act_compare: CoarseCompare = CoarseCompare(range_log2=9, resolution_log2=-6)

    exp_coeffs: tuple[float, ...] = EXP
    exp_scale_log2: int = 4
    exp_squarings: int = 2
    exp_clip: float = 16.0
    exp_compare: CoarseCompare = CoarseCompare(range_log2=9, resolution_log2=1)
    exp_frac: int = 20

    recip_coeffs: tuple[float, ...] = RECIP
    rsqrt_coeffs: tuple[float, ...] = RSQRT
    norm_tol_bits: int = 4
    poly_frac: int = 20

    max_group: int = 128
    softmax_max_compare: CoarseCompare = CoarseCompare(range_log2=9, resolution_log2=-6)
    vocab_max_group: int = 8
    vocab_max_compare: CoarseCompare = CoarseCompare(range_log2=9, resolution_log2=-3)
    argmax_compare: CoarseCompare = CoarseCompare(range_log2=7)
    argmax_group: int = 16

    norm_var_lo: float = 1e-4
    norm_var_hi: float = 1e4

    sample_u_bits: int = 24
    sample_compare: CoarseCompare = CoarseCompare()
    logit_spread: float = 64.0

    def __post_init__(self):
        if self.exp_clip > 2.0 ** self.exp_scale_log2:
            raise ValueError(f"exp_clip {self.exp_clip} exceeds the polynomial's domain 2^{self.exp_scale_log2}")
        groups = (self.max_group, self.argmax_group, self.vocab_max_group)
        if not all(2 <= g <= 4096 for g in groups):
            raise ValueError(f"group sizes must be in [2, 4096]: {groups}")
        if not 8 <= self.sample_u_bits <= 40:
            raise ValueError(f"sample_u_bits must be in [8, 40], got {self.sample_u_bits}")
        if not 2 <= self.norm_tol_bits <= 8:
            raise ValueError(f"norm_tol_bits must be in [2, 8], got {self.norm_tol_bits}")
        if self.argmax_compare.range_log2 is not None and self.logit_spread >= 2.0 ** self.argmax_compare.range_log2:
            raise ValueError(f"argmax_compare's range 2^{self.argmax_compare.range_log2} does not cover "
                             f"logit_spread {self.logit_spread}")
        if not 0 < self.norm_var_lo < self.norm_var_hi:
            raise ValueError(f"norm variance range must be 0 < lo < hi, got {self.norm_var_lo}, {self.norm_var_hi}")


# --- fitting ---------------------------------------------------------------------------
def fit_poly(f, a: float, b: float, degree: int, relative: bool = False, iters: int = 80,
             nodes: int = 6000) -> tuple[tuple[float, ...], float]:
    """Near-minimax polynomial (increasing powers) for f on [a, b] and its sup error
    (relative error if `relative`). Lawson's algorithm: weighted least squares whose weights
    grow where the error is largest."""
    x = (np.cos(np.linspace(0, np.pi, nodes)) * (b - a) + (b + a)) / 2
    y = f(x)
    scale = 1 / np.abs(y) if relative else np.ones_like(x)
    vander = np.vander(x, degree + 1, increasing=True)
    w = np.ones_like(x)
    for _ in range(iters):
        sw = np.sqrt(w) * scale
        c, *_ = np.linalg.lstsq(vander * sw[:, None], y * sw, rcond=None)
        err = np.abs(vander @ c - y) * scale
        w = w * err
        w /= w.sum()
    return tuple(float(v) for v in c), float(err.max())


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _fit_defaults() -> None:  # pragma: no cover - regenerates the literals above
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    for name, h, clip, breaks in (("GELU", lambda t: _gelu(t) - 0.5 * t, 4.0, (1.5,)),
                                  ("SILU", lambda t: t * sig(t) - 0.5 * t, 16.0, (2.0, 5.5)),
                                  ("SIGMOID", lambda t: sig(t) - 0.5, 16.0, (2.0, 6.0))):
        edges = (0.0, *breaks, clip)
        for lo, hi in zip(edges[:-1], edges[1:]):
            c, e = fit_poly(lambda s: h(clip * s), max(lo / clip - 0.002, 0.0), hi / clip + 0.005, 4)
            print(name, (lo, hi), e, c)
    print("EXP", fit_poly(lambda t: np.exp(4 * (t - 0.5)), -0.5, 0.51, 8))
    print("RECIP", fit_poly(lambda t: 1 / (t + 1.5), -0.5, 0.63, 4, relative=True))
    print("RSQRT", fit_poly(lambda t: (t + 1.5) ** -0.5, -0.5, 0.63, 4, relative=True))


if __name__ == "__main__":  # pragma: no cover
    _fit_defaults()
