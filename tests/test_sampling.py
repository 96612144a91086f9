"""Argmax and secure inverse-transform sampling: exactness and statistical tests."""

import numpy as np
import pytest
from scipy import stats

import mpc
from mpc.protocols import sampling as S

ULP = 2.0**-16


@pytest.fixture(scope="module")
def ctx():
    return mpc.Context(seed=b"sampling")


def _enc(ctx, x):
    return np.asarray(ctx.config.fixed.encode(np.asarray(x, np.float64))).astype(np.int64)


def test_argmax_matches_numpy_with_near_ties(ctx):
    """Tie rule: the lowest index among entries with equal fixed-point encodings (numpy's
    argmax of the encoded row); entries one ulp apart are ordered exactly."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 48)) * 10
    top = x.max(-1)
    x[0, 5] = x[0, 40] = top[0] + 1  # exact tie: lowest index wins
    x[1, 40] = top[1] + 1
    x[1, 6] = top[1] + 1 - ULP  # one ulp below: index 40 wins
    x[2, 9] = top[2] + 1
    x[2, 30] = top[2] + 1 + 0.3 * ULP  # below the resolution: encodes equal -> 9 wins
    x[3] = -2.5  # all equal -> 0
    x[4, 47] = top[4] + 1  # last entry
    x[5, 0] = top[5] + 5  # first entry
    x[6] = np.linspace(-100, -50, 48)  # increasing, all negative
    idx = np.asarray(S.open_index(ctx, S.argmax(ctx, ctx.share(x))))
    np.testing.assert_array_equal(idx, np.argmax(_enc(ctx, x), axis=-1))
    assert list(idx[:7]) == [5, 40, 9, 0, 47, 0, 47]


def _draws(ctx, w, n):
    return np.asarray(S.sample(ctx, ctx.share(np.tile(w, (n, 1)))))


def _law(ctx, w):
    q = np.asarray(ctx.config.fixed.decode(ctx.config.fixed.encode(w)))
    return q / q.sum()


W = np.array([0.05, 0.3, 0.0, 0.12, 0.2, 0.08, 0.25, 0.01]) * 3.0  # unnormalised, one zero weight


@pytest.fixture(scope="module")
def draws(ctx):
    return _draws(ctx, W, 24000)


def _chi2_p(counts, p):
    keep = p > 0
    return stats.chisquare(counts[keep], counts.sum() * p[keep]).pvalue


def test_sampler_matches_target_distribution(ctx, draws):
    p = _law(ctx, W)
    counts = np.bincount(draws, minlength=len(W))
    assert counts[p == 0].sum() == 0  # zero weight: never drawn
    assert _chi2_p(counts, p) > 1e-3
    tv = 0.5 * np.abs(counts / counts.sum() - p).sum()
    assert tv < 0.015  # E[TV] ≈ 0.006 at n = 24000, 8 categories


def test_negative_control_detects_a_wrong_distribution(ctx, draws):
    """The same statistics must reject a law 3% (TV) away — the tests have power."""
    p = _law(ctx, W)
    wrong = p.copy()
    wrong[1], wrong[6] = p[1] - 0.03, p[6] + 0.03
    counts = np.bincount(draws, minlength=len(W))
    assert _chi2_p(counts, wrong) < 1e-6
    assert 0.5 * np.abs(counts / counts.sum() - wrong).sum() > 0.015


def test_sampler_fresh_randomness_and_degenerate_rows(ctx):
    one_hot = np.zeros(8)
    one_hot[5] = 0.7
    assert set(_draws(ctx, one_hot, 24000).tolist()) == {5}  # same shape as above: no new kernels
    a, b = _draws(ctx, np.ones(8), 24000), _draws(ctx, np.ones(8), 24000)
    assert not np.array_equal(a, b)  # every call draws fresh u


@pytest.mark.slow
def test_sample_logits_with_temperature(ctx):
    logits = np.array([2.0, -1.0, 0.5, 3.0, 0.0, -30.0])
    t = 0.8
    x = np.tile(logits, (12000, 1))
    got = np.asarray(S.sample_logits(ctx, ctx.share(x), temperature=t))
    p = np.exp(logits / t - (logits / t).max())
    p /= p.sum()
    counts = np.bincount(got, minlength=len(logits))
    assert _chi2_p(counts[p > 1e-6], p[p > 1e-6] / p[p > 1e-6].sum()) > 1e-3
