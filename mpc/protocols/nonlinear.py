"""Nonlinear functions over shared fixed-point tensors: exp, reciprocal, rsqrt, max,
GeLU, SiLU, sigmoid (softmax and the norms build on these: `mpc.protocols.softmax`,
`mpc.protocols.norm`; argmax and sampling: `mpc.protocols.sampling`).

Building blocks, each one protocol with its cost (per party, n elements):
* `coarse_lt`: a batch of comparisons x < t with public thresholds, on a *coarse view* of
  the shares (each party drops the low `drop` bits of its share locally, the msb circuit
  then looks at the next `bits` bits). Local share shifting is only wrong by the carry
  of the dropped bits (one unit of 2^drop) and by multiples of 2^(64−drop), which
  vanish modulo 2^bits, so the view is an exact per-element value
  x̃ = ⌊x/2^drop⌋ − c, c ∈ {0, 1}: comparisons on it are consistent (transitive) and
  exact except within 2^drop above a threshold. msb rounds 1 + ⌈log2(bits − 1)⌉;
  bytes 4·L·⌈bits/8⌉ per comparison (`mpc.protocols.compare`).
* `poly_untruncated` / `poly`: several polynomials of one shared variable, sharing its
  powers: degree d costs ⌈log2 d⌉ rounds left untruncated (+1 to truncate): each level's
  truncation carries the next level's products (`linear.truncate_products`), and the
  caller fuses the final truncation with what it does next (a selection, a square).
* With DCF comparisons (`MPCConfig.comparison = "dcf"`) a comparison whose input is ready
  before a polynomial starts rides on its first round (`coarse_lt_rider`).
* `group_max`: max over groups of g elements by all-pairs comparison in one batch, a
  win count per element and one small comparison (count = g − 1) — 4 protocol steps
  whatever g is, instead of log2(g) tournament levels.

Approximation parameters: `ctx.config.nonlinear` (`mpc.approx.NonlinearConfig`).
References: SPU/PUMA (piecewise GeLU, MSB-normalised reciprocal and rsqrt), BumbleBee
(|x|-symmetric activation segments), CrypTen ((1 + x/2^n)^(2^n) exp). Rounds and bytes
per op at the defaults (Kogge–Stone) are checked exactly by tests/test_nonlinear_ledger.py:
gelu/silu/sigmoid 8, exp 10, reciprocal 9 (softmax's range), softmax 32, LayerNorm 15,
RMSNorm 14, argmax over 49,152 48 (+1 to open), sampling 11; with DCF comparisons
(`scripts/rounds_per_op.py`) 3, 6, 5, 16, 10, 9, 12 (+1) and 5.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from mpc.approx import CoarseCompare, SymmetricPiecewise
from mpc.context import Context
from mpc.protocols import compare as C
from mpc.channel import Rider
from mpc.protocols.fss import msb_dcf_begin
from mpc.protocols import linear as L
from mpc.ring import DTYPE
from mpc.shares import Shared, XorShared, concatenate, concatenate_xor, stack


# --- helpers ------------------------------------------------------------------------------
def ring_const(value, frac: int) -> np.ndarray:
    """Public reals -> ring elements at scale 2^frac (round to nearest); overflow raises."""
    v = np.round(np.asarray(value, np.float64) * 2.0**frac)
    if np.any(np.abs(v) >= 2.0**63):
        raise ValueError(f"constant {value} does not fit the ring at 2^{frac}")
    return v.astype(np.int64).astype(np.uint64)


def _pow2(k) -> np.ndarray:
    return np.left_shift(np.uint64(1), np.asarray(k, np.uint64))


def bcast(x: Shared, shape) -> Shared:
    """Broadcast a shared tensor to `shape` (numpy rules, leading axes added)."""
    return x.broadcast_to(shape)


def _with_bits(ctx: Context, bits: int) -> Context:
    """A view of the session whose comparisons examine `bits` bits (same channel/dealer)."""
    view = copy.copy(ctx)
    view.config = dataclasses.replace(ctx.config, compare_bits=max(8, int(bits)))
    return view


def msb_bits(ctx: Context, x: Shared, bits: int, op: str = "msb") -> XorShared:
    """`compare.msb` with `bits` examined bits (exact for |x| < 2^(bits−1) ring units), by
    the protocol `ctx.config.comparison` names (Kogge–Stone, or one-round DCF)."""
    return C.msb(_with_bits(ctx, bits), x, op=op)


def msb_arith(ctx: Context, x: Shared, bits: int, op: str = "msb") -> Shared:
    """The sign bit as arithmetic shares (frac 0): with DCF comparisons one round (keys
    with outputs in Z_{2^64}, `fss.msb_dcf_begin(arithmetic=True)`), with Kogge–Stone
    `msb_bits` + `b2a` (one round more)."""
    if ctx.config.comparison == "dcf":
        rider = msb_dcf_begin(ctx, x, max(8, int(bits)), arithmetic=True)
        rider.land(ctx.channel.open(f"{op}/open", rider.payload))
        return rider.result
    return C.b2a(ctx, msb_bits(ctx, x, bits, op=op), op=f"{op}/b2a")


def msb_rounds(bits: int, comparison: str = "kogge-stone") -> int:
    """Rounds of `msb_bits` at `bits` bits under `MPCConfig.comparison`."""
    if comparison == "dcf":
        return 1
    bits = max(8, bits)
    return 1 + math.ceil(math.log2(bits - 1))


def coarse_view(x: Shared, drop: int) -> Shared:
    """Each party's share shifted right by `drop` bits (local). Meaningful only modulo
    2^(64 − drop) and up to one unit: an input to `coarse` comparisons, nothing else."""
    if drop == 0:
        return x.with_frac(0)
    return x.map(lambda v: v >> np.uint64(drop), frac=0)


def coarse_lt(ctx: Context, x: Shared, thresholds, cmp: CoarseCompare | tuple[int, int],
              op: str = "lt") -> XorShared:
    """[x < t] as XOR bits for public thresholds t (reals at x's scale, broadcast against
    x — e.g. shape (k, 1, ..., 1) for k thresholds per element).

    `cmp`: a `CoarseCompare` or explicit (bits, drop) in ring bits.
    1. Both parties drop the low `drop` bits of their shares (local).
    2. Subtract ⌊t·2^frac / 2^drop⌋ (party 0, local).
    3. msb over `bits` bits.
    Exact for x < t and for x ≥ t + 2^drop ring units; |x − t| < 2^(bits + drop − 1) − 2^drop.
    Cost: one msb at `bits` bits over the broadcast shape.
    """
    d, bits = _coarse_difference(x, thresholds, cmp)
    return msb_bits(ctx, d, bits, op=op)


def _coarse_difference(x: Shared, thresholds, cmp) -> tuple[Shared, int]:
    """(x̃ − t̃ on the coarse view, the bits to examine) for `coarse_lt`."""
    bits, drop = cmp.params(x.frac) if isinstance(cmp, CoarseCompare) else cmp
    t = np.asarray(thresholds, np.float64)
    neg_t = (-np.floor(t * 2.0**x.frac / 2.0**drop)).astype(np.int64).astype(np.uint64)
    view = coarse_view(x, drop)
    shape = np.broadcast_shapes(view.shape, neg_t.shape)
    return bcast(view, shape).add_public(neg_t), bits


def coarse_lt_rider(ctx: Context, x: Shared, thresholds, cmp) -> Rider | None:
    """`coarse_lt` as a `Rider` whose opening travels in another protocol's first
    message (its `result`: the XOR bits) — with DCF comparisons, one round that can ride;
    None with Kogge–Stone (several rounds of its own: call `coarse_lt`)."""
    if ctx.config.comparison != "dcf":
        return None
    d, bits = _coarse_difference(x, thresholds, cmp)
    return msb_dcf_begin(ctx, d, max(8, int(bits)))


def _compare_alongside(ctx: Context, x: Shared, thresholds, cmp, op: str):
    """(riders for the next round, a function giving the comparison bits after it): the
    comparison rides on the next round with DCF, or runs first with Kogge–Stone."""
    rider = coarse_lt_rider(ctx, x, thresholds, cmp)
    if rider is not None:
        return [rider], lambda: rider.result
    bits = coarse_lt(ctx, x, thresholds, cmp, op=op)
    return [], lambda: bits


def select_many(ctx: Context, bits: XorShared, values: Shared, op: str = "select") -> Shared:
    """Σ_r bits[r]·values[r] over the leading axis, in one round (`compare.select_bit` on
    the stacked values; the bits broadcast against them)."""
    shape = np.broadcast_shapes(bits.shape, values.shape)
    return C.select_bit(ctx, bits.broadcast_to(shape), bcast(values, shape), op=op).sum(axis=0)


def _bit(b: XorShared, i: int) -> XorShared:
    return b[i]


# --- polynomials ------------------------------------------------------------------------------
def poly_untruncated(ctx: Context, x: Shared, polys, x_trunc: int = 0, riders=(), op: str = "poly") -> Shared:
    """Polynomials p_k(x) = Σ_i c_ki·x^i sharing the powers of x, stacked (K, ...) and left
    untruncated at a scale g (about 61 bits less the values' magnitude): the caller
    truncates them, alone (`poly`) or fused with what it does next
    (`linear.truncate_products`).

    Args:
      x: the variable at scale W = x.frac − x_trunc (keep |x| ≲ 1 where results matter;
        elements where it is large produce garbage, which callers discard by selection).
      polys: sequence of (coefficients, radius): powers 0..d, and a bound on |x| on the
        domain where that polynomial's value is used (sizes the coefficient precision).
      x_trunc: x arrives untruncated by this many bits; its truncation shares the round of
        the first square (d ≥ 2).
      riders: other steps whose openings travel with the first square (`mpc.channel.Rider`).

    Steps: x² by a square (untruncated, scale 2W; fused with x's own truncation when
    x_trunc > 0); then one round per doubling level: the powers of the last level
    (x^(m/2+1)..x^m, scale 2W) are truncated back to W and, in the same round,
    multiplied into the next level's powers x^(m+1)..x^min(2m, d) = x^m·x^(i−m) (a lower
    power already truncated is a partner, one being truncated a pair), which stay
    untruncated; each p_k is then a local combination at scale g = 2W + C with
    coefficients at C bits.
    Cost: ⌈log2 d⌉ rounds (d ≥ 2); bytes per element: 8 for the square (for x's
    truncation when fused), then per level 8 per power truncated + 8 per partner product.
    """
    w = x.frac - x_trunc
    deg = max(len(c) for c, _ in polys) - 1
    if (x_trunc or riders) and deg < 2:
        raise ValueError("poly: a pending truncation or riders need a square to ride on (degree ≥ 2)")
    pw: dict[int, Shared] = {1: x}  # powers at scale w
    top: dict[int, Shared] = {}  # the highest level's powers, untruncated (scale 2w)
    if deg >= 2:
        if x_trunc:
            fused = L.truncate_products(ctx, x[None], x_trunc, pairs=[(0, 0)], riders=riders, op=f"{op}/trunc")
            pw[1], sq = fused.y[0], fused.pairs[0]
        else:
            sq = L.square(ctx, x, op=f"{op}/square", riders=riders)
        pending = {2: sq}  # scale 2w, truncated with the next level
        m = 2
        while pending:
            idx = sorted(pending)
            at = {i: k for k, i in enumerate(idx)}
            partners, pairs, made = [], [], []
            for i in range(m + 1, min(2 * m, deg) + 1):
                lo = i - m
                if lo in at:
                    pairs.append((at[m], at[lo]))
                    made.append(("pair", len(pairs) - 1, i))
                else:
                    partners.append((at[m], pw[lo]))
                    made.append(("partner", len(partners) - 1, i))
            fused = L.truncate_products(ctx, stack([pending[i] for i in idx]), w, partners, pairs,
                                        op=f"{op}/trunc")
            for k, i in enumerate(idx):
                pw[i] = fused.y[k]
            products = {i: (fused.pairs if kind == "pair" else fused.partners)[k] for kind, k, i in made}
            if 2 * m >= deg:
                top, pending = products, {}
            else:
                pending, m = products, 2 * m
    f_top = 2 * w if top else w
    bound = max(sum(abs(c) * r**i for i, c in enumerate(cs)) for cs, r in polys) + 1.0
    cbits = min(30, 61 - f_top - math.ceil(math.log2(bound)))
    if cbits < 8:
        raise ValueError(f"poly: no room for coefficients at scale 2^{w} (bound {bound:g})")
    g = f_top + cbits
    outs = []
    for cs, _ in polys:
        acc = Shared.public(jnp.broadcast_to(ring_const(cs[0], g), x.shape), g, x.parties)
        for i, c in enumerate(cs[1:], start=1):
            if c == 0.0:
                continue
            p = top[i] if i in top else pw[i]
            acc = acc + p.mul_public(ring_const(c, g - p.frac), frac=g)
        outs.append(acc)
    return stack(outs)


def poly(ctx: Context, x: Shared, polys, out_frac: int, x_trunc: int = 0, op: str = "poly") -> list[Shared]:
    """`poly_untruncated`, then one batched truncation to `out_frac`.
    Cost: ⌈log2 d⌉ + 1 rounds (d ≥ 2); 8 bytes per polynomial and element more."""
    res = poly_untruncated(ctx, x, polys, x_trunc, op=op)
    res = L.truncate(ctx, res, res.frac - out_frac, op=f"{op}/trunc")
    return [res[k] for k in range(len(polys))]


def poly_rounds(deg: int) -> int:
    return math.ceil(math.log2(deg)) + 1 if deg >= 2 else 1


# --- exp ----------------------------------------------------------------------------------------
def exp(ctx: Context, x: Shared, out_frac: int | None = None, x_trunc: int = 0, op: str = "exp") -> Shared:
    """e^x for x ≤ 2^−5 (softmax inputs after subtracting the row max).

    1. b = [x < −clip] by one coarse comparison (`exp_compare`; fuzzy by 2 above −clip).
    2. q = p(x/2^s + 1/2) ≈ e^(x/2^squarings) (degree-8 `poly_untruncated`; x/2^s is a
       free rescale).
    3. squarings q ← q², each fused with the truncation before it
       (`linear.truncate_products`, one round each).
    4. e = (1 − b)·q, fused with the last truncation (to `out_frac`): clipped inputs give
       exactly 0 (the selection commutes with the squarings).
    `x_trunc`: x arrives at a scale this many bits above its working scale (an
    untruncated product, e.g. attention scores): its truncation rides on the polynomial's
    first square, and the comparison reads the coarse view of x as it is.
    Error (defaults): ≤ 3e-5 absolute on [−16, 2^−5] at scale 2^−20 (< 2 ulp at f = 16;
    1.6e-5 to 2.3e-5 measured over dealer seeds),
    0 below −16, < 1e-6 dropped in [−16, −14]. Works at scale `exp_frac` (20) internally.
    Cost: msb(9 bits) + poly 3 + squarings 2 + 1 = 10 rounds (7 with DCF comparisons).
    """
    nl = ctx.config.nonlinear
    out_frac = x.frac - x_trunc if out_frac is None else out_frac
    riders, clipped = _compare_alongside(ctx, x, -nl.exp_clip, nl.exp_compare, op=f"{op}/clip")
    s = nl.exp_scale_log2
    t = x.with_frac(x.frac + s)
    t = t.add_public(ring_const(0.5, t.frac))
    q = poly_untruncated(ctx, t, [(nl.exp_coeffs, 0.51)], x_trunc, riders, op=f"{op}/poly")  # (1, ...)
    bits = q.frac - nl.exp_frac
    for _ in range(nl.exp_squarings):  # truncate q and square it in one round
        q = L.truncate_products(ctx, q, bits, pairs=[(0, 0)], op=f"{op}/square").pairs[0][None]
        bits = nl.exp_frac
    # q ← (1 − b)·q: clipped inputs give exactly 0 (selecting after the squarings is the same)
    return L.truncate_products(ctx, q, q.frac - out_frac, selects=[(0, C.not_bit(clipped()))],
                               op=f"{op}/select").selects[0]


# --- reciprocal and rsqrt --------------------------------------------------------------------
def _normalise(ctx: Context, x: Shared, lo: float, hi: float, op: str):
    """x = u·2^e with u ∈ [1, 2 + 2^(1−tol)) for x ∈ [2^⌊log2 lo⌋, 2^⌈log2 hi⌉).

    Returns (one-hot XOR bits over e (E, ...), u, the bits by which u's scale exceeds
    poly_frac (its truncation is left to the caller, to ride on the next round), e values).
    1. b_j = [x < 2^j] for every j strictly inside the exponent range, one coarse batch
       (relative fuzz 2^−tol at the smallest threshold).
    2. one-hot o_e = b_(e+1) ⊕ b_e (local; b is monotone in j on the coarse view).
    3. u = Σ_e o_e·x·2^(jhi − 1 − e) at scale frac + jhi − 1 (exact shifts; one select).
    Cost: msb(bits) + 1 rounds.
    """
    nl = ctx.config.nonlinear
    q = x.frac
    jlo, jhi = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    if jhi <= jlo:
        jhi = jlo + 1
    es = np.arange(jlo, jhi)
    if len(es) > 1:
        drop = max(0, jlo + 1 + q - nl.norm_tol_bits)
        bits = max(8, jhi + q - drop + 2)
        if bits + drop > 64:
            raise ValueError(f"normalise: range [{lo:g}, {hi:g}] at scale 2^{q} exceeds the ring")
        thr = (2.0 ** es[1:]).reshape((-1,) + (1,) * x.ndim)
        b = coarse_lt(ctx, x, thr, (bits, drop), op=f"{op}/exponent")  # (E−1, ...)
        zero = XorShared(jnp.zeros((len(ctx.parties), 1, *b.shape[1:]), DTYPE), ctx.parties)
        lower = concatenate_xor([zero, b])
        upper = concatenate_xor([b, zero]).xor_public(
            np.concatenate([np.zeros(len(es) - 1, np.uint64), np.ones(1, np.uint64)]).reshape(
                (-1,) + (1,) * x.ndim))
        onehot = upper ^ lower  # o_e = b_(e+1) ⊕ b_e with b_jlo = 0, b_jhi = 1
        shifts = _pow2(jhi - 1 - es).reshape((-1,) + (1,) * x.ndim)
        cands = bcast(x, (len(es), *x.shape)).mul_public(shifts, frac=q + jhi - 1)
        u = select_many(ctx, onehot, cands, op=f"{op}/select")
    else:
        onehot = None
        u = x.with_frac(q + jhi - 1)  # one exponent: u = x / 2^jlo
    if u.frac < nl.poly_frac:
        u = u.mul_public(_pow2(nl.poly_frac - u.frac), frac=nl.poly_frac)
    return onehot, u, u.frac - nl.poly_frac, es


def _power_correction(ctx: Context, onehot, ys: Shared, es, shift_of, out_frac: int, op: str) -> Shared:
    """r = Σ_e o_e · y_(e mod K) · 2^(−shift_of(e)) at scale out_frac + max(shift_of),
    from K values ys (K, ...) still untruncated (the bits broadcast over their shape): their truncation to `out_frac`
    and the selection share one round (`linear.truncate_products`); the shifts are exact."""
    sh = np.array([shift_of(e) for e in es])
    f_out = out_frac + max(0, int(sh.max()))
    k = ys.shape[0]
    bits = ys.frac - out_frac
    if onehot is None:
        y = L.truncate(ctx, ys, bits, op=op)
        return y[int(es[0]) % k].mul_public(_pow2(f_out - out_frac - sh[0]), frac=f_out)
    selects = [(int(e) % k, onehot[i].broadcast_to(ys.shape[1:])) for i, e in enumerate(es)]
    picked = L.truncate_products(ctx, ys, bits, selects=selects, op=op).selects
    out = None
    for p, s in zip(picked, sh):
        term = p.mul_public(_pow2(f_out - out_frac - s), frac=f_out)
        out = term if out is None else out + term
    return out


def reciprocal(ctx: Context, x: Shared, lo: float, hi: float, op: str = "reciprocal") -> Shared:
    """1/x for x ∈ [lo, hi] (positive; public range), MSB-normalised (SPU's approach with a
    polynomial instead of Goldschmidt iterations).

    x = u·2^e (`_normalise`), 1/u by a degree-4 polynomial in u − 3/2 (relative error
    4.6e-4; u's truncation rides on the polynomial's first square), then
    1/x = (1/u)·2^−e exactly (the selection rides on the polynomial's truncation). The
    result has a *higher* scale, poly_frac + ⌈log2 hi⌉ − 1 fractional bits, to keep
    relative precision for large x: multiply with `mul` and truncate by its frac.
    Cost: msb(bits) + 1 + 2 + 1 rounds (8 at softmax's [1, 76] with Kogge–Stone
    comparisons, 5 with DCF); bits = ⌈log2 hi⌉ − ⌊log2 lo⌋ + norm_tol_bits + 1.
    """
    nl = ctx.config.nonlinear
    onehot, u, u_trunc, es = _normalise(ctx, x, lo, hi, op)
    t = u.add_public(ring_const(-1.5, u.frac))
    ys = poly_untruncated(ctx, t, [(nl.recip_coeffs, 0.63)], u_trunc, op=f"{op}/poly")
    return _power_correction(ctx, onehot, ys, es, lambda e: e, nl.poly_frac, op=f"{op}/scale")


def rsqrt(ctx: Context, x: Shared, lo: float, hi: float, mult: float = 1.0, op: str = "rsqrt") -> Shared:
    """mult/√x for x ∈ [lo, hi] (positive; public range).

    x = u·2^e (`_normalise`); two polynomials in u − 3/2 give mult·u^(−1/2) and
    mult·u^(−1/2)/√2 (shared powers, relative error 1.1e-4); the odd/even part of e picks
    one and 2^(−⌊e/2⌋) is an exact shift (one selection, riding on the polynomials'
    truncation). Output scale poly_frac + max(0, ⌊(⌈log2 hi⌉ − 1)/2⌋).
    Cost: msb(bits) + 1 + 2 + 1 rounds (9 for LayerNorm's n·[1e-4, 1e4] at n ≤ 1024 with
    Kogge–Stone comparisons, 5 with DCF).
    """
    onehot, ys, es = _rsqrt_polys(ctx, x, lo, hi, mult, op)
    return _power_correction(ctx, onehot, ys, es, lambda e: e // 2, ctx.config.nonlinear.poly_frac,
                             op=f"{op}/scale")


def _rsqrt_polys(ctx: Context, x: Shared, lo: float, hi: float, mult: float, op: str):
    """(one-hot exponent bits, mult·u^(−1/2) and mult·u^(−1/2)/√2 stacked and untruncated,
    exponents) for x = u·2^e: `rsqrt`'s and `rsqrt_times`'s common part."""
    nl = ctx.config.nonlinear
    onehot, u, u_trunc, es = _normalise(ctx, x, lo, hi, op)
    t = u.add_public(ring_const(-1.5, u.frac))
    c = np.asarray(nl.rsqrt_coeffs) * mult
    ys = poly_untruncated(ctx, t, [(tuple(c), 0.63), (tuple(c / math.sqrt(2.0)), 0.63)], u_trunc, op=f"{op}/poly")
    return onehot, ys, es


def rsqrt_times_fits(ctx: Context, hi: float, mult: float, frac: int) -> bool:
    """Whether `rsqrt_times`'s products y·w (|y| ≤ mult, |w| ≤ √hi) stay below 2^62 at
    scale poly_frac + frac."""
    return math.log2(mult * math.sqrt(hi)) + ctx.config.nonlinear.poly_frac + frac < 62


def rsqrt_times(ctx: Context, x: Shared, w: Shared, lo: float, hi: float, mult: float = 1.0,
                op: str = "rsqrt") -> Shared:
    """w·mult/√x for x (..., 1) ∈ [lo, hi] (a row's statistic) and w (..., n) (the row):
    a norm's core. `rsqrt`, with the product moved before the power selection so that
    both ride on truncations: the polynomials' truncation carries y_k·w (w a partner,
    broadcast over the row), and their truncation carries the selection of
    o_e·y_(e mod 2)·w. One round less than `rsqrt` + `mul` + `truncate`.
    Output at scale w.frac + S, S = max(0, ⌊(⌈log2 hi⌉ − 1)/2⌋): the S extra bits of
    precision keep small rows exact; the next truncation (a linear layer's) drops them.
    Requires mult·√hi·2^(poly_frac + w.frac) < 2^62 (|w| ≤ √hi on a norm's rows).
    Cost: msb(bits) + 1 + 2 + 1 + 1 rounds (5 with DCF).
    """
    nl = ctx.config.nonlinear
    if not rsqrt_times_fits(ctx, hi, mult, w.frac):
        raise ValueError(f"rsqrt_times: mult·√hi = {mult * math.sqrt(hi):g} at scale 2^{nl.poly_frac + w.frac} "
                         "passes the ring (use rsqrt, then mul)")
    onehot, ys, es = _rsqrt_polys(ctx, x, lo, hi, mult, op)
    fused = L.truncate_products(ctx, ys, ys.frac - nl.poly_frac, partners=[(0, w), (1, w)], op=f"{op}/times")
    prods = stack(fused.partners)  # (2, ..., n) at poly_frac + w.frac
    return _power_correction(ctx, onehot, prods, es, lambda e: e // 2, w.frac, op=f"{op}/scale")


# --- max ---------------------------------------------------------------------------------------------
def group_max(ctx: Context, x: Shared, cmp: CoarseCompare, carry: list[Shared] = (), op: str = "max"):
    """Max over the last axis (a group of g elements) and the carried values at its position.

    1. All g(g−1)/2 pairs i < j compared at once on the coarse view: β_ij = [x̃_i < x̃_j].
    2. β as arithmetic shares (`msb_arith`: b2a, 1 round more, with Kogge–Stone; none
       with DCF keys that output in Z_{2^64}); wins_j = #{i < j: β_ij} + #{k > j: ¬β_jk}
       (local).
    3. The winner has wins = g − 1; exactly one element does (ties go to the lowest
       index): one comparison at ⌈log2 g⌉ + 2 bits.
    4. Select x (and the carried values) at the winner: one round.
    Returns (max, [carried...]) with the last axis removed.
    Cost: msb(bits) + 1 + msb(8) + 1 rounds (11 at 16 bits; 3 with DCF); bytes per party:
    g(g−1)/2·(msb bytes + 1/8) + g·(12 + (8 + 1/8)·(1 + len(carry))).
    """
    g = x.shape[-1]
    if g == 1:
        return x[..., 0], [c[..., 0] for c in carry]
    ii, jj = np.triu_indices(g, 1)
    bits, drop = cmp.params(x.frac)
    view = coarse_view(x, drop)
    beta = msb_arith(ctx, view[..., ii] - view[..., jj], bits, op=f"{op}/pairs")  # (..., P) 0/1
    wins = beta.map(lambda v: _pair_counts(v, ii, jj)).add_public((g - 1 - np.arange(g)).astype(np.uint64))
    cbits = max(8, math.ceil(math.log2(g)) + 2)
    loses = msb_bits(ctx, wins.add_public(np.uint64(2**64 - (g - 1))), cbits, op=f"{op}/winner")
    items = [x, *carry]
    vals = stack([v.with_frac(0) for v in items])  # (K, ..., g)
    win = C.not_bit(loses)
    win = win.map(lambda v: v[:, None]).broadcast_to(vals.shape)
    picked = C.select_bit(ctx, win, vals, op=f"{op}/select").sum(axis=-1)  # (K, ...)
    outs = [picked[k].with_frac(v.frac) for k, v in enumerate(items)]
    return outs[0], outs[1:]


def _pair_counts(beta: jax.Array, ii: np.ndarray, jj: np.ndarray) -> jax.Array:
    """Σ_{i<j} β_ij − Σ_{k>j} β_jk for each j, from β over the pairs (ii, jj) of g
    elements, i < j (last axis; local, exact mod 2^64). Each j is in g − 1 pairs: one
    gather of them and a signed sum (a matmul with the ±1 incidence matrix would split
    it into limbs on every call)."""
    g = int(jj.max()) + 1  # g ≥ 2: group_max returns early for one element
    pairs = np.zeros((g, g - 1), np.int64)
    signs = np.zeros((g, g - 1), np.uint64)
    for j in range(g):
        as_larger, as_smaller = np.flatnonzero(jj == j), np.flatnonzero(ii == j)
        pairs[j] = np.concatenate([as_larger, as_smaller])
        signs[j] = [1] * len(as_larger) + [2**64 - 1] * len(as_smaller)
    return (beta[..., pairs] * signs).sum(axis=-1)


def tree_levels(n: int, group: int) -> int:
    """Levels of `tree_max` over n entries with groups of at most `group`."""
    return max(1, math.ceil(math.log(n) / math.log(group) - 1e-9)) if n > 1 else 0


def tree_max(ctx: Context, x: Shared, cmp: CoarseCompare, group: int, with_index: bool = False,
             op: str = "max"):
    """Max over the last axis by levels of `group_max` (⌈log_group n⌉ levels, balanced group
    size). Groups are padded with copies of the row's first element, which never change the
    result or the tie rule (the lowest index of the maximal value wins).
    Returns (max, index or None); the last axis is removed; the index is shared, frac 0.
    Cost: levels × group_max.
    """
    n = x.shape[-1]
    idx = Shared.public(jnp.broadcast_to(jnp.arange(n, dtype=DTYPE), x.shape), 0, x.parties) if with_index else None
    levels = tree_levels(n, group)
    size = math.ceil(n ** (1.0 / levels) - 1e-9) if levels else 1
    for level in range(levels):
        n = x.shape[-1]
        g = min(size, n) if level < levels - 1 else n
        groups = math.ceil(n / g)
        pad = groups * g - n
        if pad:
            x = concatenate([x, *[x[..., :1]] * pad], axis=-1)
            if idx is not None:
                idx = concatenate([idx, *[idx[..., :1]] * pad], axis=-1)
        shape = (*x.shape[:-1], groups, g)
        carry = [idx.reshape(shape)] if idx is not None else []
        x, carried = group_max(ctx, x.reshape(shape), cmp, carry, op=f"{op}/l{level}")
        idx = carried[0] if idx is not None else None
    return x[..., 0], (idx[..., 0] if idx is not None else None)


def max_(ctx: Context, x: Shared, axis: int = -1, op: str = "max") -> Shared:
    """Exact max along an axis (`argmax_compare`, `max_group` per level); ties are exact."""
    nl = ctx.config.nonlinear
    x = x.swapaxes(axis, -1) if axis not in (-1, x.ndim - 1) else x
    m, _ = tree_max(ctx, x, nl.argmax_compare, nl.max_group, op=op)
    return m


# --- activations ------------------------------------------------------------------------------
def piecewise(ctx: Context, x: Shared, spec: SymmetricPiecewise, op: str = "act") -> Shared:
    """A `SymmetricPiecewise` function of x (GeLU, SiLU, sigmoid).

    1. One coarse batch of comparisons at 0, ±breaks, ±2^clip_log2 (`act_compare`).
    2. s = x/2^clip_log2 (free rescale); for each |x|-segment k, the positive-side and
       negative-side polynomials in s (H_k(s) and parity·H_k(−s), plus the linear part
       folded into the coefficients) — all from shared powers (`poly_untruncated`,
       degree 4, left untruncated).
    3. Region bits are XORs of neighbouring comparison bits (local); the result is
       Σ_region bit·value, the selections riding on the polynomials' truncation
       (`linear.truncate_products`; the tails, x or a constant, as riders): one round.
    Cost: msb(16) 5 + poly 2 + 1 = 8 rounds (4 with DCF comparisons); bytes per element:
    (2K+3)·msb + poly + 8·2(K+1) + ⌈(2K+2)/8⌉ + (8 + 1/8) per tail, for K breakpoints.
    """
    nl = ctx.config.nonlinear
    f = x.frac
    big = 2.0 ** spec.clip_log2
    brk = list(spec.breaks)
    thr = [-big, *[-b for b in reversed(brk)], 0.0, *brk, big]
    riders, compared = _compare_alongside(ctx, x, np.array(thr).reshape((-1,) + (1,) * x.ndim), nl.act_compare,
                                          op=f"{op}/cmp")
    s = x.with_frac(f + spec.clip_log2)
    edges = [0.0, *brk, big]
    polys = []
    for k, cs in enumerate(spec.segments):
        cs = np.array(cs, np.float64)
        pos = cs.copy()
        neg = spec.parity * cs * (-1.0) ** np.arange(len(cs))
        for p in (pos, neg):
            p[0] += spec.lin_c
            p[1] += spec.lin_a * big
        r = edges[k + 1] / big + 0.02
        polys += [(tuple(pos), r), (tuple(neg), r)]
    ys = poly_untruncated(ctx, s, polys, riders=riders, op=f"{op}/poly")  # (2K, ...) untruncated
    bits = compared()
    nseg = len(spec.segments)
    selects, riders = [], []
    # regions between thresholds r and r+1: negative segments (outermost first), then positive
    for r in range(len(thr) - 1):
        index = 2 * (nseg - 1 - r) + 1 if r < nseg else 2 * (r - nseg)
        selects.append((index, _bit(bits, r + 1) ^ _bit(bits, r)))
    for a, c, bit in ((spec.right_a, spec.right_c, C.not_bit(_bit(bits, len(thr) - 1))),
                      (spec.left_a, spec.left_c, _bit(bits, 0))):
        if a == 0.0 and c == 0.0:
            continue
        if a not in (0.0, 1.0):
            raise ValueError(f"piecewise: tail slope must be 0 or 1, got {a}")
        v = x if a == 1.0 else Shared.public(jnp.zeros(x.shape, DTYPE), f, x.parties)
        riders.append(C.select_bit_begin(ctx, bit, v.add_public(ring_const(c, f)) if c else v))
    # the polynomials' truncation, the region selections and the tails' selections: one round
    fused = L.truncate_products(ctx, ys, ys.frac - f, selects=selects, riders=riders, op=f"{op}/select")
    out = fused.selects[0]
    for v in fused.selects[1:] + [rider.result for rider in riders]:
        out = out + v
    return out


def gelu(ctx: Context, x: Shared, op: str = "gelu") -> Shared:
    """GeLU (tanh form) within 1e-3 on all inputs with |x| < 496. 10 rounds (`piecewise`)."""
    return piecewise(ctx, x, ctx.config.nonlinear.gelu, op=op)


def silu(ctx: Context, x: Shared, op: str = "silu") -> Shared:
    """SiLU x·σ(x) within 1e-3 for |x| < 496. 10 rounds (`piecewise`)."""
    return piecewise(ctx, x, ctx.config.nonlinear.silu, op=op)


def sigmoid(ctx: Context, x: Shared, op: str = "sigmoid") -> Shared:
    """σ(x) within 2e-4 for |x| < 496. 10 rounds (`piecewise`)."""
    return piecewise(ctx, x, ctx.config.nonlinear.sigmoid, op=op)
