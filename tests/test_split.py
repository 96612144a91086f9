"""The offline/online split (`mpc.Context(split=True)`, `mpc.secure_jit`): every program
runs as an offline program (the dealer's draws and corrections) and an online one (the
protocol, the material as inputs). Same randomness, same results bit for bit, and the same
ledger, in the simulation and party by party."""

import numpy as np
import pytest

import mpc
from mpc.protocols import nonlinear as NL
from mpc.shares import PARTIES
from tests.test_party import SEED, assert_same_shares, run_parties


@mpc.secure_jit
def _silu_open(ctx, x):
    y = NL.silu(ctx, ctx.share_ring(x, frac=16))
    return y, ctx.channel.open("out", y)


def _same_sim(a, b):
    """Two simulated sharings are equal share by share."""
    assert a.parties == b.parties == PARTIES and a.frac == b.frac
    for p in PARTIES:
        np.testing.assert_array_equal(np.asarray(a.share(p)), np.asarray(b.share(p)))


X = (np.random.default_rng(0).normal(scale=3.0, size=(4, 48)) * 2**16).astype(np.int64).astype(np.uint64)


@pytest.mark.parametrize("comparison", ["kogge-stone", "dcf"])
def test_split_program_is_bit_identical_and_counts_the_same(comparison):
    config = mpc.MPCConfig(comparison=comparison)
    runs = []
    for split in (False, True):
        ctx = mpc.Context(config, seed=b"split", split=split)
        outs = [_silu_open(ctx, X) for _ in range(2)]  # the second call: the next requests
        runs.append((outs, ctx))
    (plain, ctx_plain), (split_outs, ctx_split) = runs
    for (y0, open0), (y1, open1) in zip(plain, split_outs):
        _same_sim(y0, y1)
        np.testing.assert_array_equal(np.asarray(open0), np.asarray(open1))
    assert ctx_plain.ledger.entries == ctx_split.ledger.entries
    assert ctx_split.phase_seconds["offline"] > 0 and ctx_split.phase_seconds["online"] > 0
    assert ctx_plain.phase_seconds == {"offline": 0.0, "online": 0.0}
    # silu is close to the real function (the split computes the protocol, not a stand-in)
    want = X.astype(np.int64) / 2**16
    want = want / (1 + np.exp(-want))
    assert np.abs(np.asarray(plain[0][1]).astype(np.int64) / 2**16 - want).max() < 0.02


def test_split_party_processes_equal_the_simulation():
    """Each party alone, split: the offline program asks the dealer for its corrections,
    the online one talks only to the peer; shares equal the unsplit simulation's."""
    sim = mpc.Context(seed=SEED)
    want = _silu_open(sim, X)
    parts, ctxs = run_parties(lambda ctx, p: _silu_open(ctx, X), split=True)
    assert_same_shares(want[0], [parts[p][0] for p in PARTIES])
    for p in PARTIES:
        np.testing.assert_array_equal(np.asarray(parts[p][1]), np.asarray(want[1]))
        assert ctxs[p].phase_seconds["offline"] > 0


def test_replay_checks_that_the_material_is_used_exactly():
    ctx = mpc.Context(seed=b"replay")
    drawn = []
    with ctx.dealer.recording(drawn):
        ctx.dealer.triple((3,))
        ctx.dealer.square_pair((3,))
    assert len(drawn) == 2
    with pytest.raises(RuntimeError, match="used 1 of 2"):
        with ctx.dealer.replaying(drawn):
            ctx.dealer.triple((3,))
    with pytest.raises(RuntimeError, match="more material"):
        with ctx.dealer.replaying(drawn[:1]):
            ctx.dealer.triple((3,))
            ctx.dealer.square_pair((3,))


def test_secure_forward_split_equals_unsplit():
    """A tiny LLaMA's secure prefill and decoding step, split and unsplit, from the same
    seed: the same logits' shares bit for bit."""
    from pspec_jax.models import tiny_model
    from pspec_jax.secure import SecureSession

    b = tiny_model("llama", seed=3)
    ids = np.array([[3, 7, 1, 9]], np.int32)
    logits = []
    for split in (False, True):
        from pspec_jax.secure.ranges import calibrated_config

        config, _ = calibrated_config(b.config, b.params)
        sess = SecureSession(b.config, b.params, max_len=8, ctx=mpc.Context(config, seed=b"fwd", split=split))
        logits.append([sess.forward(ids[:, :3]), sess.forward(ids[:, 3:])])
        if split:
            assert sess.ctx.phase_seconds["online"] > 0
    for a, c in zip(*logits):
        _same_sim(a, c)
