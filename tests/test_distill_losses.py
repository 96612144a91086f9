"""Distillation losses against numpy references (full rows and the top-k + rest form)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import losses as L

RNG = np.random.default_rng(0)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _rows(n=6, v=11, scale=3.0):
    return (_softmax(RNG.normal(size=(n, v)) * scale), _softmax(RNG.normal(size=(n, v)) * scale))


def np_tv(p, q):
    return 0.5 * np.abs(p - q).sum(-1)


def np_kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return t.sum(-1)


def np_jsd(p, q, beta):
    m = beta * p + (1 - beta) * q
    return beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)


@pytest.mark.parametrize("fn,ref", [
    (L.total_variation, np_tv),
    (L.forward_kl, np_kl),
    (L.reverse_kl, lambda p, q: np_kl(q, p)),
])
def test_divergences_match_numpy(fn, ref):
    p, q = _rows()
    got = np.asarray(fn(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)))
    np.testing.assert_allclose(got, ref(p, q), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_numpy(beta):
    p, q = _rows()
    got = np.asarray(L.jensen_shannon(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32), beta=beta))
    np.testing.assert_allclose(got, np_jsd(p, q, beta), rtol=1e-4, atol=1e-6)
    # JSD(β) ≤ H(β) = −β log β − (1 − β) log(1 − β) (log 2 at β = ½), with equality exactly
    # when the supports are disjoint; and swapping p and q is swapping β and 1 − β.
    h = -beta * np.log(beta) - (1 - beta) * np.log(1 - beta)
    assert np.all(got <= h + 1e-6) and np.all(got > 1e-3)
    disjoint_p = jnp.asarray([[0.6, 0.4, 0.0, 0.0]], jnp.float32)
    disjoint_q = jnp.asarray([[0.0, 0.0, 0.3, 0.7]], jnp.float32)
    assert float(L.jensen_shannon(disjoint_p, disjoint_q, beta=beta)[0]) == pytest.approx(h, rel=1e-5)
    swapped = np.asarray(L.jensen_shannon(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32), beta=1 - beta))
    np.testing.assert_allclose(swapped, got, rtol=1e-4, atol=1e-6)


def test_tv_is_half_l1_sum_not_mean():
    p = jnp.asarray([[1.0, 0.0, 0.0, 0.0]], jnp.float32)
    q = jnp.asarray([[0.0, 1.0, 0.0, 0.0]], jnp.float32)
    assert float(L.total_variation(p, q)[0]) == pytest.approx(1.0)  # a mean would give 0.5
    q2 = jnp.asarray([[0.5, 0.5, 0.0, 0.0]], jnp.float32)
    assert float(L.total_variation(p, q2)[0]) == pytest.approx(0.5)
    # the acceptance rate decoding measures is α = Σ min(p, q) = 1 − TV (what the loss targets)
    from pspec_jax.decode.accept import acceptance_alpha

    assert float(acceptance_alpha(p, q2)[0]) == pytest.approx(1.0 - 0.5)
    pr, qr = (jnp.asarray(a, jnp.float32) for a in _rows())
    np.testing.assert_allclose(np.asarray(acceptance_alpha(pr, qr)),
                               1.0 - np.asarray(L.total_variation(pr, qr)), atol=1e-6)


def test_divergences_vanish_at_equality_and_are_positive():
    p, q = _rows()
    pj, qj = jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32)
    for fn in (L.total_variation, L.forward_kl, L.reverse_kl, L.jensen_shannon):
        assert np.all(np.asarray(fn(pj, pj)) < 1e-5)
        assert np.all(np.asarray(fn(pj, qj)) > 1e-3)


@pytest.mark.parametrize("kind", L.LOSSES)
def test_position_loss_full_rows_with_temperature(kind):
    V = 13
    t_logits = RNG.normal(size=(2, 3, V)) * 2
    s_logits = RNG.normal(size=(2, 3, V)) * 2
    T = 1.7
    tgt = L.topk_target(jnp.asarray(t_logits, jnp.float32), V, temperature=T)
    got = np.asarray(L.position_loss(kind, tgt, jnp.asarray(s_logits, jnp.float32),
                                     temperature=T, beta=0.3))
    p, q = _softmax(t_logits / T), _softmax(s_logits / T)
    ref = {"tv": np_tv(p, q), "fkl": np_kl(p, q), "rkl": np_kl(q, p), "jsd": np_jsd(p, q, 0.3)}[kind]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", L.LOSSES)
def test_position_loss_topk_is_the_coarsened_divergence(kind):
    V, k = 17, 5
    t_logits = RNG.normal(size=(4, V)) * 2
    s_logits = RNG.normal(size=(4, V)) * 2
    tgt = L.topk_target(jnp.asarray(t_logits, jnp.float32), k)
    got = np.asarray(L.position_loss(kind, tgt, jnp.asarray(s_logits, jnp.float32), beta=0.5))
    p, q = _softmax(t_logits), _softmax(s_logits)
    idx = np.argsort(-p, axis=-1)[:, :k]
    pc = np.concatenate([np.take_along_axis(p, idx, -1), 1 - np.take_along_axis(p, idx, -1).sum(-1, keepdims=True)], -1)
    qc = np.concatenate([np.take_along_axis(q, idx, -1), 1 - np.take_along_axis(q, idx, -1).sum(-1, keepdims=True)], -1)
    ref = {"tv": np_tv(pc, qc), "fkl": np_kl(pc, qc), "rkl": np_kl(qc, pc), "jsd": np_jsd(pc, qc, 0.5)}[kind]
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-6)
    # coarsening never increases TV: the top-k TV is a lower bound of the full one
    if kind == "tv":
        assert np.all(got <= np_tv(p, q) + 1e-6)


@pytest.mark.parametrize("kind", L.LOSSES)
def test_gradients_finite_with_peaked_teacher(kind):
    V = 9
    t_logits = jnp.asarray(np.where(np.arange(V) == 2, 60.0, 0.0)[None], jnp.float32)  # one-hot-ish
    s_logits = jnp.asarray(RNG.normal(size=(1, V)), jnp.float32)
    for k in (3, V):
        tgt = L.topk_target(t_logits, k)
        g = jax.grad(lambda s: L.distill_loss(kind, tgt, s, jnp.ones((1,), bool)))(s_logits)
        assert np.all(np.isfinite(np.asarray(g)))
        assert float(jnp.abs(g).sum()) > 0


def test_masked_mean_ignores_masked_positions():
    v = jnp.asarray([1.0, 100.0, 3.0], jnp.float32)
    assert float(L.masked_mean(v, jnp.asarray([True, False, True]))) == pytest.approx(2.0)
    assert float(L.masked_mean(v, jnp.zeros(3, bool))) == 0.0
