"""One-round comparisons by DCF (mpc/protocols/fss.py) as a protocol: the sign against
plaintext on random, boundary and wrapping inputs; the party-local run bit-identical to
the simulation; exact online and dealer bytes and rounds; a nonlinear op under
`comparison="dcf"` against the Kogge–Stone one."""

import jax
import numpy as np
import pytest

import mpc
from mpc import dcf
from mpc.dealer import Request, correction_bytes, session_keys
from mpc.prg import request_words
from mpc.protocols import compare as C, fss, nonlinear as NL
from mpc.shares import CLIENT, SERVER
from tests.test_party import assert_same_shares, run_parties

DCF = mpc.MPCConfig(comparison="dcf")
N = 128  # elements per test batch: one compilation per width


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _dealer_r(seed: bytes, nonce: int, count: int, bits: int) -> np.ndarray:
    """The mask r of request `nonce` in a session keyed from `seed`: what each party draws
    as its share of r (words 2N..3N of its dealer stream), summed mod 2^n."""
    keys = session_keys(seed)
    w = [request_words(keys[p], nonce, 3 * count)[2 * count:] for p in (CLIENT, SERVER)]
    return (w[0] + w[1]) & np.uint64(_mask(bits))


@mpc.secure_jit
def _sign(ctx, x, *, bits):
    xs = ctx.share_ring(x)  # request 0: the pairwise mask
    return fss.msb_dcf(ctx, xs, bits)  # request 1: the DCF material


def _open_bits(ctx, b):
    return np.asarray(ctx.channel.open("check", b, bits=1))


def test_dealer_r_is_the_mask_the_protocol_opens_against():
    """The test's reading of r (used below to aim inputs at wraps) is the dealer's r."""
    ctx = mpc.Context(seed=b"fss-r")
    r, keys = ctx.dealer.msb_keys((N,), 16)  # request 0
    np.testing.assert_array_equal(np.asarray(ctx.channel.open("r", r, ring_bits=16)), _dealer_r(b"fss-r", 0, N, 16))
    assert keys[CLIENT].cw_seed.shape == (6, 4, N) and keys[CLIENT].cw_leaf.shape == (8, N)
    for a, b in zip(keys[CLIENT][1:], keys[SERVER][1:]):  # the correction words: the same for both
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("bits", [8, 16, 33, 64])
def test_msb_dcf_against_plaintext_sign(bits):
    seed = b"fss-sign-%d" % bits
    rng = np.random.default_rng(bits)
    r = _dealer_r(seed, 1, N, bits)
    half, top = 1 << (bits - 1), _mask(bits)
    r_low = r & np.uint64(half - 1)
    # x as n-bit values: boundaries, values whose x̂ = x + r lands on 0, 2^n − 1, 2^(n−1) ± 1
    # and on r's low bits ± 1 (the carry boundary), and random values
    x = rng.integers(0, 2**63, N, dtype=np.uint64) & np.uint64(top)
    fixed = [0, 1, top, half - 1, half + 1, half]  # 0, ±1, ±(2^(n−1) − 1), −2^(n−1)
    x[:6] = fixed
    aims = [0, top, half, half - 1, half + 1]
    for i, a in enumerate(aims):
        x[6 + 8 * i:14 + 8 * i] = (np.uint64(a) - r[6 + 8 * i:14 + 8 * i]) & np.uint64(top)
    for i, d in enumerate([-1, 0, 1]):
        sl = slice(46 + 8 * i, 54 + 8 * i)
        x[sl] = (r_low[sl] + np.uint64(d % (1 << 64)) - r[sl]) & np.uint64(top)
    signed = np.array([int(v) - (1 << bits) if int(v) >= half else int(v) for v in x], object)
    wraps = (x.astype(object) + r.astype(object)) >= (1 << bits)
    assert 0.25 < wraps.mean() < 0.75  # both sides of the wrap are covered
    # the ring input: the n-bit value sign-extended to 64 bits
    ring = np.array([v % (1 << 64) for v in signed], np.uint64)
    ctx = mpc.Context(DCF, seed=seed)
    got = _open_bits(ctx, _sign(ctx, ring, bits=bits))
    np.testing.assert_array_equal(got, (signed < 0).astype(np.uint64))


def test_msb_config_switch_and_relu():
    """compare.msb and relu follow `MPCConfig.comparison`; results equal Kogge–Stone's."""
    x = np.concatenate([np.array([0.0, 2**-16, -2**-16, 100.0, -100.0]), np.random.default_rng(1).normal(size=27)])

    @mpc.secure_jit
    def program(ctx, v):
        xs = ctx.share(v)
        return C.msb(ctx, xs, bits=32), C.relu(ctx, xs, bits=32)

    outs = {}
    for name in mpc.context.COMPARISONS:
        ctx = mpc.Context(mpc.MPCConfig(comparison=name), seed=b"fss-relu")
        b, y = program(ctx, x)
        outs[name] = (_open_bits(ctx, b), np.asarray(ctx.reveal(y)))
    np.testing.assert_array_equal(outs["dcf"][0], (x < 0).astype(np.uint64))
    np.testing.assert_array_equal(outs["dcf"][0], outs["kogge-stone"][0])
    np.testing.assert_allclose(outs["dcf"][1], np.maximum(x, 0), atol=2**-16)
    with pytest.raises(ValueError, match="comparison"):
        mpc.MPCConfig(comparison="garbled")


def test_party_local_equals_simulation():
    """Each party holding its own share and its own key (the common correction words
    fetched from the dealer, its root seed and share of r from its own stream) computes
    the simulation's shares bit for bit; both ledgers equal the simulation's."""
    cfg = mpc.MPCConfig(comparison="dcf", compare_bits=16)
    x = np.random.default_rng(2).normal(size=(3, 7)) * 0.1  # |x| < 2^-1: exact at 16 bits, f = 16

    @mpc.secure_jit
    def program(ctx, v):
        xs = ctx.share(v, owner=CLIENT)
        return C.msb(ctx, xs), C.relu(ctx, xs), NL.coarse_lt(ctx, xs, np.array([-1.0, 0.5])[:, None, None], (16, 8))

    sim_ctx = mpc.Context(cfg, seed=b"party-local")
    sim = program(sim_ctx, x)
    parts, ctxs = run_parties(lambda ctx, p: program(ctx, x if p == CLIENT else np.zeros_like(x)), config=cfg)
    assert_same_shares(list(sim), [list(parts[0]), list(parts[1])])
    for c in ctxs:
        assert c.ledger.entries == sim_ctx.ledger.entries
    np.testing.assert_array_equal(_open_bits(sim_ctx, sim[0]), (x < 0).astype(np.uint64))


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
def test_online_and_dealer_bytes_and_rounds(bits):
    n = 100
    ctx = mpc.Context(DCF, seed=b"fss-ledger")
    x = ctx.share(np.zeros((4, 25)))
    with ctx.ledger.capture() as entries:
        jax.jit(lambda v: fss.msb_dcf(ctx, v, bits).v).lower(x)
    on = [e for e in entries if e.kind == "online"]
    dealt = [e for e in entries if e.kind == "dealer"]
    want = fss.msb_dcf_cost(n, bits)
    assert [(e.bytes0, e.bytes1, e.rounds) for e in on] == [(want["online_bytes"],) * 2 + (1,)]
    assert want["online_bytes"] == -(-bits * n // 8)
    assert [(e.bytes0, e.bytes1) for e in dealt] == [(want["dealer_bytes"],) * 2]  # the same to each party
    per_element = {8: 8 * 2, 16: 8 * (12 + 9), 32: 8 * (44 + 10), 64: 8 * (108 + 11)}[bits]
    assert want["dealer_bytes"] == per_element * n
    # the documented words per element at ℓ = 1: m = n − 1 − 9 tree levels (none below
    # n = 10) and a leaf table of 2^min(n − 1, 9) bits: 2m + ⌈(3m + 2^ν)/64⌉
    m, nu = max(0, bits - 10), min(bits - 1, 9)
    assert dcf.correction_words(bits - 1, 1) == 2 * m + -(-(3 * m + 2**nu) // 64)
    assert correction_bytes(Request("dcf_msb", ((4, 25),), (bits, 1))) == per_element * n
    # the packed words hold the correction bits with less than one word of padding
    assert 8 * per_element - dcf.correction_bits(bits - 1, 1) < 64
    # compare.msb under the switch records the same
    with ctx.ledger.capture() as via_msb:
        jax.jit(lambda v: C.msb(ctx, v, bits=max(8, bits)).v).lower(x)
    assert [(e.kind, e.bytes0, e.bytes1, e.rounds) for e in via_msb] == [
        (e.kind, e.bytes0, e.bytes1, e.rounds) for e in entries]


def test_silu_with_dcf_matches_kogge_stone_in_fewer_rounds():
    """SiLU's comparison becomes one round that rides on the polynomial's first square
    (8 → 3 rounds); the values stay within the documented 1e-3 of SiLU and within a few
    ulps of the Kogge–Stone result (the comparisons see the same coarse view; only later
    dealer randomness differs)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([np.array([0.0, 2**-16, -2**-16, -4.0, 4.0, 3.0, -3.0, 20.0, -20.0]),
                        rng.normal(size=55) * 3])
    silu = mpc.secure_jit(lambda ctx, v: NL.silu(ctx, ctx.share(v)))
    got, rounds, online = {}, {}, {}
    for name in mpc.context.COMPARISONS:
        ctx = mpc.Context(mpc.MPCConfig(comparison=name), seed=b"fss-silu")
        mark = ctx.ledger.snapshot()
        y = silu(ctx, x)
        t = ctx.ledger.since(mark).totals("online")
        rounds[name], online[name] = t.rounds, t.bytes0
        got[name] = np.asarray(ctx.reveal(y))
    ref = x / (1.0 + np.exp(-x))
    for name in got:
        assert np.max(np.abs(got[name] - ref)) < 1e-3, name
    assert np.max(np.abs(got["dcf"] - got["kogge-stone"])) <= 4 * 2**-16
    assert rounds["kogge-stone"] == 8
    assert rounds["dcf"] == 8 - NL.msb_rounds(16) == 3
    assert online["dcf"] < online["kogge-stone"]


def test_dealer_makes_a_common_correction_once(monkeypatch):
    """Both parties fetch the DCF correction words; the dealer computes them once and
    hands the second party the same words."""
    import dataclasses

    from mpc.dealer import KINDS, CorrectionMaker

    calls = []
    real = KINDS["dcf_msb"].correct
    monkeypatch.setitem(KINDS, "dcf_msb", dataclasses.replace(KINDS["dcf_msb"],
                                                              correct=lambda *a: calls.append(1) or real(*a)))
    maker = CorrectionMaker(session_keys(b"fss-once"), compiled=False)
    req = Request("dcf_msb", ((4,),), (8, 1))
    first, second = maker.correction(3, req, []), maker.correction(3, req, [])
    third = maker.correction(4, req, [])  # another request: made anew, kept for its second receiver
    assert len(calls) == 2 and set(maker._shared) == {(4, req)}
    np.testing.assert_array_equal(first, second)
    assert first.shape == (4 * dcf.correction_words(7, 1),) and not np.array_equal(first, third)


def test_dealer_process_correction_equals_in_graph():
    """The dealer process's compiled correction (from the request and keys alone) equals
    the simulation's in-graph one for the same request number."""
    from mpc.dealer import CorrectionMaker

    keys = session_keys(b"fss-compiled")
    ctx = mpc.Context(seed=b"fss-compiled")
    _, sim_keys = ctx.dealer.msb_keys((2, 3), 12)  # request 0
    words = CorrectionMaker(keys, compiled=True).correction(0, Request("dcf_msb", ((2, 3),), (12, 1)), [])
    want = dcf.pack_corrections(sim_keys[SERVER], n_bits=11, out_bits=1)
    np.testing.assert_array_equal(words.reshape(6, -1), np.asarray(want))


@pytest.mark.slow  # ~2 min on 2 cores: a whole secure forward compiles
def test_secure_forward_with_dcf_comparisons():
    """A tiny LLaMA's secure prefill with every comparison by DCF (no Kogge–Stone AND left)
    matches the plain model as closely as the default forward does (test_secure: 0.02)."""
    import jax.numpy as jnp

    from pspec_jax.models import arch, tiny_model
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure.ranges import calibrated_config

    b = tiny_model("llama", seed=3)
    ids = jnp.array([[3, 7, 1]], jnp.int32)
    cfg, _ = calibrated_config(b.config, b.params, base=DCF)
    sess = SecureSession(b.config, b.params, max_len=8, mpc_config=cfg, seed=b"fss-forward")
    mark = sess.ledger.snapshot()
    got = sess.reveal_logits(sess.forward(ids))
    ops = [e.op for e in sess.ledger.since(mark).entries]
    assert any(op.endswith("/open") for op in ops) and not any(op.endswith("/and") for op in ops)
    assert np.abs(got - np.asarray(arch.forward(b.config, b.params, ids)[0])).max() < 0.02
