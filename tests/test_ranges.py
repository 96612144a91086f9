"""Ranges from the model (pspec_jax.secure.ranges): the calibration measures what it says,
and every reduced-width comparison it widens is exact just past the old constant's
boundary — where the generic config wraps (the negative controls)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import mpc
from mpc.protocols import nonlinear as NL
from mpc.protocols import sampling as S
from pspec_jax.models import arch
from pspec_jax.models.bundle import tiny_model
from pspec_jax.secure.ranges import MARGIN, ModelRanges, calibration_ids, measure, session_config
from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

BASE = ModelRanges(act_max=50.0, norm_var_min=0.01, norm_var_max=1e5, norm_mean_max=1.0, score_spread=30.0,
                   logit_spread=40.0)


def _ctx(**ranges) -> mpc.Context:
    return mpc.Context(session_config(dataclasses.replace(BASE, **ranges)), seed=b"ranges")


def _q(x):
    fp = DEFAULT_MPC_CONFIG.fixed
    return np.array(fp.decode(fp.encode(np.asarray(x, np.float64))))


def silu_ref(x):
    return x / (1 + np.exp(-x))


def test_measure_matches_the_plain_forward():
    b = tiny_model("gpt2", seed=3)
    ids = calibration_ids(b.config)
    r = measure(b.config, b.params, ids)
    logits, _ = arch.forward(b.config, b.params, jnp.asarray(ids))
    logits = np.asarray(logits)
    assert r.logit_spread == pytest.approx((logits.max(-1) - logits.min(-1)).max(), rel=1e-6)
    assert 0 < r.norm_var_min <= r.norm_var_max and r.act_max > 0 and r.score_spread > 0
    assert r.norm_mean_max > 0  # LayerNorm inputs have a mean; RMSNorm models report 0
    llama = tiny_model("llama", seed=3)
    assert measure(llama.config, llama.params, ids).norm_mean_max == 0.0
    assert ModelRanges.from_array(r.to_array()) == r


@pytest.mark.parametrize("bad", [np.zeros(5), np.full(6, np.nan), -np.ones(6)])
def test_malformed_ranges_are_refused(bad):
    with pytest.raises(ValueError):
        ModelRanges.from_array(bad)


def test_activation_range_past_512():
    """SiLU(±600): the generic 2^9 comparison range wraps (SiLU(600) → 0); a model whose
    activations reach 300 gets a range covering 2·300 + 16."""
    x = _q([600.0, -600.0, 511.0, -513.0, 300.0, 3.0])
    ctx = _ctx(act_max=300.0)
    assert ctx.config.nonlinear.act_compare.range_log2 == 10
    got = np.asarray(ctx.reveal(NL.silu(ctx, ctx.share(x))))
    assert np.abs(got - silu_ref(x)).max() < 5e-3
    generic = mpc.Context(DEFAULT_MPC_CONFIG, seed=b"ranges")  # negative control: the wrap
    wrapped = np.asarray(generic.reveal(NL.silu(generic, generic.share(x))))
    assert np.abs(wrapped[:2] - silu_ref(x[:2])).max() > 100


@pytest.mark.parametrize("gap", [127.5, 128.5, 200.0])
def test_argmax_gap_at_and_past_128(gap):
    """Greedy argmax with a logit gap at the generic 2^7 range's boundary and past it:
    exact once the calibrated spread covers the gap; the generic range is exact just
    inside the boundary and gives a wrong index just past it (negative control)."""
    row = np.full(64, -50.0)
    row[5] = gap - 50.0  # every comparison with the winner spans the gap
    x = _q(row[None])
    ctx = _ctx(logit_spread=gap)
    assert 2.0 ** ctx.config.nonlinear.argmax_compare.range_log2 > gap * MARGIN
    assert int(S.open_index(ctx, S.argmax(ctx, ctx.share(x)))[0]) == 5
    generic = mpc.Context(DEFAULT_MPC_CONFIG, seed=b"ranges")
    got = int(S.open_index(generic, S.argmax(generic, generic.share(x)))[0])
    assert (got == 5) == (gap < 128)


def test_temperature_lower_bound():
    """Below the bound: a clear error; just above it, a row as wide as the calibrated
    spread (measured × MARGIN) still gives the right weights: gap/T sits just inside the
    comparisons' range."""
    ctx = _ctx(logit_spread=40.0)
    nl = ctx.config.nonlinear
    assert nl.logit_spread == 40.0 * MARGIN
    V = 64
    bound = S.min_temperature(nl, V)
    assert 0.1 < bound < 0.2
    row = np.zeros(V)
    row[3], row[9] = 40.0 * MARGIN, 1.0  # a row as wide as the margin allows
    x = _q(row[None])
    with pytest.raises(ValueError, match="lower bound"):
        S.vocab_weights(ctx, ctx.share(x), temperature=bound * 0.9)
    T = bound * 1.01
    w = np.asarray(ctx.reveal(S.vocab_weights(ctx, ctx.share(x), temperature=T)))
    p = w / w.sum()
    ref = np.exp((x - x.max()) / T)
    ref /= ref.sum()
    assert np.abs(p - ref).max() < 1e-3


def test_norm_range_covers_the_measured_variance():
    cfg = session_config(dataclasses.replace(BASE, norm_var_max=1.3e6, norm_var_min=1e-5)).nonlinear
    assert cfg.norm_var_hi == 1.3e6 * MARGIN and cfg.norm_var_lo == pytest.approx(1e-5 / MARGIN)
    narrow = session_config(BASE).nonlinear  # never narrower than the generic defaults
    assert narrow.norm_var_hi == DEFAULT_MPC_CONFIG.nonlinear.norm_var_hi
    assert narrow.act_compare == DEFAULT_MPC_CONFIG.nonlinear.act_compare


def test_rmsnorm_past_the_generic_variance_range():
    """Rows with mean squares 3e6 and 5e6 (past the generic 1.5e6; SmolLM2's first-token
    rows reach ~8e5): accurate once the calibrated range covers them; the generic range
    extrapolates rsqrt (errors ≈ 1 and ≈ 1e4, the negative control). 1.4e6 is fine in both."""
    from mpc.protocols import norm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 576))
    x *= np.sqrt(np.array([3e6, 1.4e6, 5e6])[:, None] / np.mean(x**2, -1, keepdims=True))
    ref = x / np.sqrt(np.mean(x**2, -1, keepdims=True) + 1e-6)
    ctx = _ctx(norm_var_max=5e6)
    err = np.abs(np.asarray(ctx.reveal(norm.rmsnorm(ctx, ctx.share(x), None))) - ref).max(-1)
    assert err.max() < 1e-2
    generic = mpc.Context(DEFAULT_MPC_CONFIG, seed=b"ranges")
    err = np.abs(np.asarray(generic.reveal(norm.rmsnorm(generic, generic.share(x), None))) - ref).max(-1)
    assert err[1] < 1e-2 and err[0] > 0.1 and err[2] > 0.1


def test_layernorm_mean_out_of_range_is_a_user_error():
    from pspec_jax.errors import UserError

    with pytest.raises(UserError, match="row means"):
        session_config(dataclasses.replace(BASE, norm_mean_max=9000.0))


@pytest.mark.parametrize("field", ["act_max", "score_spread", "logit_spread"])
def test_ranges_past_the_ring_are_a_user_error(field):
    from pspec_jax.errors import UserError

    with pytest.raises(UserError, match="past what the 64-bit ring holds"):
        session_config(dataclasses.replace(BASE, **{field: 1e15}))


def test_session_calibrates_by_default():
    from pspec_jax.secure import SecureSession

    b = tiny_model("llama", seed=1)
    sess = SecureSession(b.config, b.params, max_len=8)
    assert sess.ranges == measure(b.config, b.params, calibration_ids(b.config))
    assert sess.calibration()["measured"]["logit_spread"] == pytest.approx(sess.ranges.logit_spread, abs=1e-4)


@pytest.mark.parametrize("mode", ["secure", "post"])
def test_temperature_below_the_bound_is_a_user_error(mode):
    from pspec_jax.decode.post import generate_post
    from pspec_jax.decode.sampling import Sampling
    from pspec_jax.decode.secure import generate_secure
    from pspec_jax.errors import UserError

    b = tiny_model("llama", seed=2)
    run = (lambda s: generate_secure(b, [1, 2, 3], 2, s)) if mode == "secure" else \
        (lambda s: generate_post(b, b.truncated(1), [1, 2, 3], 2, 2, s))
    with pytest.raises(UserError, match="below this model's lower bound"):
        run(Sampling(temperature=1e-3))


def test_an_opened_index_outside_the_vocabulary_is_an_error(monkeypatch):
    """The client refuses an argmax index ≥ V (a wrapped tree argmax can sum to one)."""
    from pspec_jax.errors import UserError
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure import session as session_module

    b = tiny_model("llama", seed=1)
    sess = SecureSession(b.config, b.params, max_len=8)
    V = b.config.vocab_size
    logits = sess.ctx.share(np.zeros((1, 1, V)))
    monkeypatch.setattr(session_module, "next_token_program", lambda ctx, x, temperature: np.array([V]))
    with pytest.raises(UserError, match="outside the vocabulary"):
        sess.next_token(logits, 0.0)


@pytest.mark.parametrize("as_json", [False, True])
def test_profile_shows_the_calibration(capsys, as_json):
    """`--profile` carries the measured ranges and the widths derived from them, in the
    printed table and in --json."""
    import types

    from pspec_jax.commands.secure_modes import finish_cli
    from pspec_jax.decode.common import GenerationResult
    from pspec_jax.secure import SecureSession

    b = tiny_model("llama", seed=1)
    sess = SecureSession(b.config, b.params, max_len=8)
    from pspec_jax.decode.costs import CostReport

    costs = CostReport.of(sess.ledger.since(0), 0.0, 1).to_json(tokens=1)  # set-up only: no pass run
    res = GenerationResult("secure", [1], 1, [], [],
                           extra={**costs, "_ledger": sess.ledger, "_ranges": sess.calibration()})
    args = types.SimpleNamespace(network="wan", profile=True, json=as_json)
    ranges = finish_cli(res, args).extra["profile"]["ranges"]
    assert ranges["measured"]["logit_spread"] == pytest.approx(sess.ranges.logit_spread, abs=1e-4)
    assert ranges["margin"] == MARGIN
    assert ranges["argmax_range_log2"] == sess.ctx.config.nonlinear.argmax_compare.range_log2
    printed = capsys.readouterr().out
    assert ("ranges: measured = {" in printed and "ranges: argmax_range_log2 = " in printed) != as_json
