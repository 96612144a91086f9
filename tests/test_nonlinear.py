"""Nonlinear protocols against float64 references on realistic and edge inputs.

Tolerances are the issue's: GeLU/SiLU ≤ 5e-3 absolute (sigmoid too), softmax ≤ 1e-3
absolute, reciprocal/rsqrt ≤ 1e-3 relative, LayerNorm/RMSNorm ≤ 1e-2 absolute. References
take the fixed-point encoded inputs, so the error measured is the protocol's.
"""

import math

import numpy as np
import pytest

import mpc
from mpc.approx import CoarseCompare, NonlinearConfig, SymmetricPiecewise
from mpc.protocols import linear as L
from mpc.protocols import nonlinear as NL
from mpc.protocols.norm import layernorm, rmsnorm
from mpc.protocols.softmax import softmax

ULP = 2.0**-16


@pytest.fixture(scope="module")
def ctx():
    return mpc.Context(seed=b"nonlinear")


def _q(ctx, x):
    fp = ctx.config.fixed
    return np.array(fp.decode(fp.encode(np.asarray(x, np.float64))))


def _run(ctx, fn, x, *args, **kw):
    return np.asarray(ctx.reveal(fn(ctx, ctx.share(x), *args, **kw)))


def gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def silu_ref(x):
    return x / (1 + np.exp(-x))


def sigmoid_ref(x):
    return 1 / (1 + np.exp(-x))


def _activation_inputs(ctx, spec, rng):
    big = 2.0**spec.clip_log2
    edges = [0.0, *spec.breaks, big]
    e = np.array([[v - ULP, v, v + ULP, v + 0.03, v - 0.03] for v in edges]).ravel()
    return _q(ctx, np.concatenate([rng.normal(size=3000) * 4, rng.uniform(-12, 12, 2000), e, -e,
                                   [400.0, -400.0, 64.0, -64.0, 20.0, -20.0],
                                   [3 * big, -3 * big, 8 * big, -8 * big]]))


@pytest.mark.parametrize("name,ref,tol", [("gelu", gelu_ref, 1e-3), ("silu", silu_ref, 1e-3),
                                          ("sigmoid", sigmoid_ref, 3e-4)])
def test_activations_random_and_edges(ctx, name, ref, tol):
    spec = getattr(ctx.config.nonlinear, name)
    x = _activation_inputs(ctx, spec, np.random.default_rng(1))
    got = _run(ctx, getattr(NL, name), x)
    err = np.abs(got - ref(x))
    assert err.max() <= tol, (x[np.argmax(err)], err.max())
    # Far beyond the clip each function equals its asymptote (x, 0 or 1) to within 1e-9, so
    # the protocol must match it to a few ULPs of truncation, not merely within `tol`: a
    # wrong tail offset or a tail taken from the wrong side could hide inside the tolerance.
    far = np.abs(x) >= 3 * 2.0**spec.clip_log2
    assert far.sum() >= 4 and (x[far] > 0).any() and (x[far] < 0).any()
    assert err[far].max() <= 4 * ULP, (x[far][np.argmax(err[far])], err[far].max())


def test_exp_domain_and_clip(ctx):
    rng = np.random.default_rng(2)
    nl = ctx.config.nonlinear
    clip = nl.exp_clip
    z = _q(ctx, np.concatenate([-rng.uniform(0, 30, 3000), [0.0, 1 / 32, -ULP, -clip, -clip + ULP, -clip - ULP,
                                                             -clip + 2, -clip + 2.01, -1e2, -400.0]]))
    got = _run(ctx, NL.exp, z, out_frac=nl.exp_frac)  # softmax's working scale 2^-20
    assert np.all(got[z < -clip] == 0)  # below the clip: exactly 0 (never an overflow)
    # within 3e-5 everywhere (the clip is fuzzy by 2 above −clip only, where e^z < 1e-6);
    # the worst case is a rare chain of ±1-ulp truncations through the squarings: 1.6e-5 to
    # 2.3e-5 over dealer seeds, before and after the truncations carried the squarings
    assert np.abs(got - np.where(z < -clip, 0, np.exp(z))).max() <= 3e-5


@pytest.mark.parametrize("fn,lo,hi", [("reciprocal", 1.0, 76.0), ("rsqrt", 0.0768, 7.68e6),
                                      pytest.param("reciprocal", 0.01, 300.0, marks=pytest.mark.slow),
                                      pytest.param("rsqrt", 0.5, 2.0, marks=pytest.mark.slow)])
def test_reciprocal_rsqrt_relative(ctx, fn, lo, hi):
    rng = np.random.default_rng(3)
    pw = 2.0 ** np.arange(math.floor(math.log2(lo)) + 1, math.ceil(math.log2(hi)))
    x = np.concatenate([np.exp(rng.uniform(math.log(lo), math.log(hi), 3000)), [lo, hi],
                        pw, pw + 2 * ULP, pw - ULP])
    x = _q(ctx, x[(x >= lo) & (x <= hi)])
    got = _run(ctx, getattr(NL, fn), x, lo, hi)
    ref = 1 / x if fn == "reciprocal" else x**-0.5
    rel = np.abs(got - ref) / ref
    assert rel.max() <= 1e-3, (x[np.argmax(rel)], rel.max())


@pytest.mark.slow
def test_rsqrt_multiplier(ctx):
    x = _q(ctx, np.exp(np.random.default_rng(4).uniform(0, 10, 500)))
    got = _run(ctx, NL.rsqrt, x, 1.0, 3e4, mult=math.sqrt(768))
    assert (np.abs(got - math.sqrt(768) / np.sqrt(x)) / (math.sqrt(768) / np.sqrt(x))).max() <= 1e-3


def _softmax_ref(x, mask=None, temperature=1.0):
    x = x / temperature
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = x.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(x - m)
    s = e.sum(-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1), 0)


def _softmax_inputs(ctx, rng):
    x = rng.normal(size=(2, 10, 24)) * 3
    x[0, 0] = 1.5  # all equal
    x[0, 1] = 0.0
    x[0, 1, 7] = 50.0  # one dominant entry
    x[0, 2] = np.linspace(-200, 200, 24)  # wide range
    x[0, 3, :] = -3.0
    x[0, 3, 5] = -3.0 + 16.0  # entries at the clip boundary below the max
    x[0, 3, 6] = -3.0 + 14.0
    x[0, 3, 8] = -3.0 + 16.0 - ULP
    x[0, 4, :12] = 30.0  # ties at the max
    x[0, 5] = rng.normal(size=24) * 12  # large logits
    return _q(ctx, x)


def test_softmax_edges_causal_and_masked_rows(ctx):
    """Batch 0: unmasked rows (random, all-equal, one dominant, wide range, clip
    boundary, ties, large logits); batch 1: causal mask, a fully masked row, a row with
    one kept entry, huge garbage under the mask."""
    x = _softmax_inputs(ctx, np.random.default_rng(6))
    mask = np.arange(24)[None, :] <= (14 + np.arange(10))[:, None]  # causal, 10 queries at the end
    mask = np.broadcast_to(mask, x.shape).copy()
    mask[0] = True
    mask[1, 9] = False  # a fully masked row -> zeros
    mask[1, 8] = False
    mask[1, 8, 23] = True  # only the last entry kept
    x[1, 4, mask[1, 4] == 0] = 1e4  # masked garbage may be huge: never affects the row
    x = _q(ctx, x)
    got = _run(ctx, softmax, x, mask=mask)
    ref = _softmax_ref(x, mask)
    assert np.abs(got - ref).max() <= 1e-3
    assert np.all(got[~mask] == 0)
    np.testing.assert_allclose(got[1, 8, 23], 1.0, atol=1e-3)


@pytest.mark.slow
def test_softmax_temperature(ctx):
    x = _softmax_inputs(ctx, np.random.default_rng(7))
    x[0, 2] *= 0.5  # keep (x_i − x_j)/T inside the documented range 2^9 − 16
    got = _run(ctx, softmax, x, temperature=0.7)
    assert np.abs(got - _softmax_ref(x, temperature=0.7)).max() <= 1e-3


def _norm_rows(rng, n, var_lo=1e-4, var_hi=1e4, rows=10, mean=True):
    var = np.exp(np.linspace(np.log(var_lo), np.log(var_hi), rows))[:, None]
    x = rng.normal(size=(rows, n)) * np.sqrt(var) + (rng.normal(size=(rows, 1)) * 5 if mean else 0)
    return x


def test_layernorm(ctx):
    rng = np.random.default_rng(8)
    n = 64  # rmsnorm's shape too: the eager kernels are shared
    x = _norm_rows(rng, n)
    x = np.concatenate([x, np.full((1, n), 3.25), np.eye(1, n) * 10.0])  # all-equal row, one dominant entry
    x = _q(ctx, x)
    g, b = _q(ctx, 1 + 0.3 * rng.normal(size=n)), _q(ctx, 0.2 * rng.normal(size=n))
    sw = L.setup_weight(ctx, g)
    got = np.asarray(ctx.reveal(layernorm(ctx, ctx.share(x), sw, ctx.config.fixed.encode(b), 1e-5)))
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    assert np.abs(got - ref).max() <= 1e-2
    np.testing.assert_allclose(got[-2], b, atol=2 * ULP)  # all-equal row: exactly β (to an ulp)


def test_rmsnorm(ctx):
    rng = np.random.default_rng(9)
    n = 64
    x = _q(ctx, np.concatenate([_norm_rows(rng, n, mean=False), np.full((1, n), -0.75), np.eye(1, n) * 50.0]))
    g = _q(ctx, 1 + 0.3 * rng.normal(size=n))
    got = np.asarray(ctx.reveal(rmsnorm(ctx, ctx.share(x), L.setup_weight(ctx, g), 1e-6)))
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    assert np.abs(got - ref * g).max() <= 1e-2


@pytest.mark.parametrize("n", [768, 4096])
def test_norms_on_wide_rows(n):
    """Rows wider than 715 with massive variances (SmolLM2's first-token rows reach 8e5):
    Σd² would pass 2^62 at scale 2^32, so the squares drop low bits first (no exception)."""
    ctx = mpc.Context(mpc.MPCConfig(nonlinear=NonlinearConfig(norm_var_hi=1.5e6)), seed=b"wide")
    rng = np.random.default_rng(n)
    x = _q(ctx, np.concatenate([_norm_rows(rng, n, var_lo=1e-2, var_hi=1.4e6, rows=6, mean=False),
                                np.eye(1, n) * 2.2e4]))  # one massive entry
    got = np.asarray(ctx.reveal(rmsnorm(ctx, ctx.share(x), None, 1e-6)))
    assert np.abs(got - x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)).max() <= 1e-2
    y = _q(ctx, _norm_rows(rng, n, var_lo=1e-2, var_hi=1.4e6, rows=4))
    got = np.asarray(ctx.reveal(layernorm(ctx, ctx.share(y), None, None, 1e-5)))
    ref = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    assert np.abs(got - ref).max() <= 1e-2


@pytest.mark.slow
def test_rmsnorm_without_scale(ctx):
    x = _q(ctx, _norm_rows(np.random.default_rng(9), 64, mean=False))
    got = np.asarray(ctx.reveal(rmsnorm(ctx, ctx.share(x), None, 1e-6)))
    assert np.abs(got - x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)).max() <= 1e-2


def test_max_exact(ctx):
    rng = np.random.default_rng(10)
    x = _q(ctx, rng.normal(size=(3, 5, 40)) * 20)
    x[1, 2, 17] = x[1, 2, 33] = x[1, 2].max() + ULP  # ties and one-ulp gaps are exact
    x[2, 0, :] = -7.0
    np.testing.assert_array_equal(np.asarray(ctx.reveal(NL.max_(ctx, ctx.share(x), axis=1))), x.max(1))


def test_coarse_lt_is_exact_outside_its_fuzz(ctx):
    rng = np.random.default_rng(11)
    cmp = CoarseCompare(range_log2=3, resolution_log2=-8)  # 12 bits above 8 dropped ones at f = 16
    assert cmp.params(16) == (12, 8)
    x = _q(ctx, np.concatenate([rng.uniform(-7, 7, 4000), [-1.0, 1.0, 0.0]]))
    b = NL.coarse_lt(ctx, ctx.share(x), 1.0, cmp)
    got = np.asarray(ctx.channel.open("t", b)) & np.uint64(1)
    fuzz = (x >= 1.0) & (x < 1.0 + 2.0**-8)
    np.testing.assert_array_equal(got[~fuzz], (x[~fuzz] < 1.0).astype(np.uint64))


def test_config_validation():
    with pytest.raises(ValueError):
        CoarseCompare(range_log2=50, resolution_log2=-16).params(16)
    assert NonlinearConfig().softmax_max_compare.params(16) == (16, 10)
    assert NonlinearConfig().softmax_max_compare.params(20) == (16, 14)  # same range and resolution
    assert NonlinearConfig().argmax_compare.params(16) == (24, 0)
    assert NonlinearConfig().sample_compare.params(36) == (64, 0)
    with pytest.raises(ValueError):
        NonlinearConfig(exp_clip=40.0)
    with pytest.raises(ValueError):
        NonlinearConfig(max_group=1)
    with pytest.raises(ValueError):
        SymmetricPiecewise(clip_log2=2, breaks=(5.0,), segments=((0.0,), (0.0,)))
    with pytest.raises(ValueError):
        SymmetricPiecewise(clip_log2=2, breaks=(1.0,), segments=((0.0,),))
    assert mpc.MPCConfig().nonlinear == NonlinearConfig()


@pytest.mark.slow
def test_secure_jit_matches_eager_and_counts_once(ctx):
    """Under secure_jit: same accuracy, the per-call ledger equals the eager one, no recompile."""
    x = _softmax_inputs(ctx, np.random.default_rng(12))
    mask = np.arange(24)[None, :] <= (14 + np.arange(10))[:, None]
    fn = mpc.secure_jit(lambda c, a: softmax(c, a, mask=mask))
    xs = ctx.share(x)
    mark = ctx.ledger.snapshot()
    softmax(ctx, xs, mask=mask)
    eager = ctx.ledger.since(mark).totals()
    fn(ctx, xs)
    mark = ctx.ledger.snapshot()
    got = np.asarray(ctx.reveal(fn(ctx, xs)))
    once = ctx.ledger.since(mark).totals()
    assert (once.bytes0 - 8 * x.size, once.rounds - 1) == (eager.bytes0, eager.rounds)  # minus the reveal
    assert len(ctx._programs) >= 1 and sum(1 for k in ctx._programs if k[0] is fn.__wrapped__) == 1
    assert np.abs(got - _softmax_ref(x, np.broadcast_to(mask, x.shape))).max() <= 1e-3
