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


def test_argmax_gap_past_128():
    """Greedy argmax with a logit gap of 200: exact once the calibrated spread covers it;
    the generic 2^7 range gives a wrong index (negative control)."""
    row = np.zeros(64)
    row[5], row[40] = 150.0, -50.0
    x = _q(row[None])
    ctx = _ctx(logit_spread=200.0)
    assert ctx.config.nonlinear.argmax_compare.range_log2 == 9
    assert int(S.open_index(ctx, S.argmax(ctx, ctx.share(x)))[0]) == 5
    generic = mpc.Context(DEFAULT_MPC_CONFIG, seed=b"ranges")
    assert int(S.open_index(generic, S.argmax(generic, generic.share(x)))[0]) != 5


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


def test_layernorm_mean_out_of_range_is_a_user_error():
    from pspec_jax.errors import UserError

    with pytest.raises(UserError, match="row means"):
        session_config(dataclasses.replace(BASE, norm_mean_max=9000.0))


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
