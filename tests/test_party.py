"""Party-local protocols: each party's program alone, holding only its own shares.

Two party contexts (`mpc.party_context`) in one process, one thread each, joined by an
in-process link, with the dealer's corrections made by `CorrectionMaker` from the
request descriptions alone (what the dealer process does). With the simulation's keys,
every share a party computes must be bit-identical to the simulation's share of that
party, and no party ever holds its peer's share (`PeerShareError` otherwise).
"""

from __future__ import annotations

import threading

import jax.numpy as jnp
import numpy as np
import pytest

import mpc
from mpc.channel import MemoryLink
from mpc.dealer import CorrectionMaker, session_keys
from mpc.protocols import compare as C, linear as L, nonlinear as NL
from mpc.protocols.oblivious import select_client_index
from mpc.protocols.rejection import greedy_verify, speculative_verify
from mpc.protocols.sampling import argmax
from mpc.protocols.softmax import softmax
from mpc.shares import CLIENT, PARTIES, SERVER, PeerShareError, Shared, XorShared

SEED = b"party-local"


def party_keys(keys: dict, p: int) -> dict:
    """What party p holds: its dealer key, the client–server key, its own private key."""
    return {p: keys[p], "pairwise": keys["pairwise"], ("own", p): keys[("own", p)]}


def run_parties(program, seed: bytes = SEED, config: mpc.MPCConfig = mpc.MPCConfig(), split: bool = False):
    """program(ctx, party) in both party contexts (two threads) -> [client's, server's]."""
    keys = session_keys(seed)
    maker = CorrectionMaker(keys, compiled=False)  # eager: small programs, few repeated requests
    links = MemoryLink.pair(timeout_s=900)  # a party waits while its peer compiles
    ctxs = [mpc.party_context(p, links[p], party_keys(keys, p), maker.corrections, config, split=split)
            for p in PARTIES]
    out, errors = [None, None], []

    def run(p):
        try:
            out[p] = program(ctxs[p], p)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            links[p].send([np.zeros(0, np.uint8)])  # unblock the peer

    threads = [threading.Thread(target=run, args=(p,)) for p in PARTIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if errors:
        raise errors[0]
    return out, ctxs


def assert_same_shares(sim, parts):
    """Every party's share equals the simulation's share of that party, bit for bit."""
    if isinstance(sim, (Shared, XorShared)):
        for p in PARTIES:
            assert parts[p].parties == (p,)
            np.testing.assert_array_equal(np.asarray(parts[p].share(p)), np.asarray(sim.share(p)))
    elif isinstance(sim, (list, tuple)):
        for i, s in enumerate(sim):
            assert_same_shares(s, [parts[0][i], parts[1][i]])
    elif sim is not None:  # a public value: both parties that received it agree with the simulation
        for p in PARTIES:
            if parts[p] is not None:
                np.testing.assert_array_equal(np.asarray(parts[p]), np.asarray(sim))


def _inputs(shape, seed):
    return np.random.default_rng(seed).normal(size=shape)


@mpc.secure_jit
def _protocol_mix(ctx, x, y, ones):
    """One program touching every protocol family."""
    xs = ctx.share(x, owner=CLIENT)
    ys = ctx.share(y, owner=SERVER)
    prod = L.mul_fixed(ctx, xs, ys)
    mm = L.truncate(ctx, L.matmul(ctx, xs, ys.T), 16)
    r = C.relu(ctx, xs - ys, bits=40)
    e = NL.exp(ctx, -r)
    sm = softmax(ctx, mm)
    (masked,) = L.mask_once(ctx, [ys], row_axes=1)
    mo = L.matmul_masked(ctx, xs, masked.transpose(1, 0))
    best = argmax(ctx, xs)
    picked = select_client_index(ctx, xs, jnp.asarray([1, 0, 3], jnp.int32) * ones)
    bit = C.b2a(ctx, C.msb(ctx, xs, bits=40))
    opened = ctx.channel.open("open_both", prod)
    to_client = ctx.channel.open("open_client", best, to=CLIENT)
    return prod, mm, r, e, sm, mo, best, picked, bit, opened, to_client


def test_every_protocol_family_party_local_equals_simulation():
    x, y = _inputs((3, 5), 1), _inputs((3, 5), 2)
    one = jnp.ones((3,), jnp.int32)
    sim_ctx = mpc.Context(seed=SEED)
    sim = _protocol_mix(sim_ctx, x, y, one)

    def program(ctx, p):
        # a party passes zeros for the inputs it does not own (only their shape is used)
        return _protocol_mix(ctx, x if p == CLIENT else np.zeros_like(x), y if p == SERVER else np.zeros_like(y),
                             one)

    parts, ctxs = run_parties(program)
    *shared, opened, to_client = sim
    assert_same_shares(shared, [list(parts[0][:9]), list(parts[1][:9])])
    for p in PARTIES:
        np.testing.assert_array_equal(np.asarray(parts[p][9]), np.asarray(opened))
    np.testing.assert_array_equal(np.asarray(parts[CLIENT][10]), np.asarray(to_client))
    # both parties' ledgers equal the simulation's, entry for entry
    for c in ctxs:
        assert c.ledger.entries == sim_ctx.ledger.entries


def test_server_weights_party_local_equals_simulation():
    rng = np.random.default_rng(3)
    w, w2 = rng.normal(size=(6, 4)) * 0.3, rng.normal(size=(6, 4)) * 0.3
    b, x = rng.normal(size=4), rng.normal(size=(2, 6))
    fp = mpc.FixedPoint(16)

    @mpc.secure_jit
    def layer(ctx, sws, bias, xin):
        xs = ctx.share(xin, owner=CLIENT)
        y = L.linear(ctx, xs, sws[0], bias=bias)
        head = L.truncate(ctx, L.matmul_weight(ctx, y, sws[1].T), 16)  # a tied (transposed) weight
        return y, head

    def program(ctx, p):
        server = p is None or p == SERVER
        sws = [L.setup_weight(ctx, w if server else np.zeros_like(w)),
               L.setup_weight(ctx, w2 if server else np.zeros_like(w2))]
        return layer(ctx, sws, fp.encode(b) if server else np.zeros(4, np.uint64), x if p in (None, CLIENT) else 0 * x)

    sim = program(mpc.Context(seed=SEED), None)
    parts, _ = run_parties(program)
    assert_same_shares(list(sim), [list(parts[0]), list(parts[1])])


def test_a_party_cannot_read_its_peers_share():
    def program(ctx, p):
        x = ctx.share(np.ones(3) if p == CLIENT else np.zeros(3), owner=CLIENT)
        with pytest.raises(PeerShareError):
            x.share(1 - p)
        return x.share(p)

    run_parties(program)


@mpc.secure_jit
def _verify(ctx, logits, drafts, thresholds, q_rows, *, temperature: float, privacy: str):
    if temperature == 0.0:
        return greedy_verify(ctx, logits, drafts)
    return speculative_verify(ctx, logits, drafts, thresholds, q_rows, temperature, privacy)


# ~7 min on 2 cores (three contexts compile every program): slow, in CI; the three-process
# test of tests/test_runtime.py covers the same programs party-local in the quick suite.
@pytest.mark.parametrize("family", [pytest.param("llama", marks=pytest.mark.slow),
                                    pytest.param("gpt2", marks=pytest.mark.heavy)])
def test_secure_forward_and_post_verification_party_local(family):
    """The whole secure forward (prefill, a 3-token pass, rollback) and POST's three
    verifications, each party holding only its own shares (weights: the server's only;
    token ids, drafts, thresholds, q: the client's only), equal the simulation."""
    import jax

    from pspec_jax.models import tiny_model
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

    b = tiny_model(family, seed=3)
    V = b.config.vocab_size
    ids = np.array([[3, 7, 1, 9, 4]], np.int32)
    drafts = np.array([9, 4], np.int32)
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(V), size=2)
    q_rows = np.concatenate([q, np.zeros((1, V))])
    thresholds = rng.uniform(size=2) * q[np.arange(2), drafts]

    def program(ctx, p):
        client, server = p in (None, CLIENT), p in (None, SERVER)
        params = b.params if server else jax.tree_util.tree_map(jnp.zeros_like, b.params)
        sess = SecureSession(b.config, params, max_len=8, mpc_config=DEFAULT_MPC_CONFIG, seed=SEED, ctx=ctx)
        mine = (lambda a: a) if client else np.zeros_like
        sess.forward(mine(ids[:, :3]), with_logits=False)
        logits = sess.forward(mine(ids[:, 2:5]))
        sess.rollback(4)
        again = sess.forward(mine(ids[:, 4:5]))
        args = (logits[0], mine(drafts), mine(thresholds), mine(q_rows))
        outs = [_verify(sess.ctx, *args, temperature=0.0, privacy="strict"),
                _verify(sess.ctx, *args, temperature=1.0, privacy="strict"),
                _verify(sess.ctx, *args, temperature=0.7, privacy="paper")]
        return logits, again, outs

    sim_logits, sim_again, sim_outs = program(None, None)  # ctx None: a simulated session keyed from SEED
    parts, _ = run_parties(program, config=DEFAULT_MPC_CONFIG)
    assert_same_shares([sim_logits, sim_again], [list(parts[0][:2]), list(parts[1][:2])])
    for sim_out, c_out, s_out in zip(sim_outs, parts[CLIENT][2], parts[SERVER][2]):
        (n, res), (n_c, res_c), (n_s, _) = sim_out, c_out, s_out
        assert int(n) == int(n_c) == int(n_s)  # the accepted count: opened to both
        np.testing.assert_array_equal(np.asarray(res_c), np.asarray(res))  # token or row: the client's only


# Heavy (by hand, `make test-heavy`): ~5 min on 2 cores, every tree program compiled by
# three contexts; in CI, tests/test_runtime.py's slow tree test runs the tree programs
# party-local through three processes (seeded paper = the simulation; the greedy tree
# through three processes is heavy too: tests/test_post_smollm2.py's demo --tree).
@pytest.mark.heavy
def test_token_tree_pass_walk_and_keep_path_party_local():
    """A tree pass (mask and positions from the public shape), the private walk over a
    branching tree in the three modes, keep_path and the next pass, each party holding
    only its own shares, equal the simulation; the path is known to both parties."""
    import jax

    from pspec_jax.models import tiny_model
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

    b = tiny_model("llama", seed=3)
    V = b.config.vocab_size
    parents, n_nodes = (0, 1, 0, 2, 0, 1), 5  # slot 6 is padding (an adaptive tree)
    ids = np.array([3, 7, 1, 9], np.int32)
    slots = np.array([9, 4, 2, 8, 4, 6, 0], np.int32)
    rng = np.random.default_rng(1)
    q_try = rng.dirichlet(np.ones(V), size=7)
    thresholds = rng.uniform(size=7) * q_try[np.arange(7), slots] * 0.2

    def program(ctx, p):
        client, server = p in (None, CLIENT), p in (None, SERVER)
        params = b.params if server else jax.tree_util.tree_map(jnp.zeros_like, b.params)
        sess = SecureSession(b.config, params, max_len=16, mpc_config=DEFAULT_MPC_CONFIG, seed=SEED, ctx=ctx)
        mine = (lambda a: a) if client else np.zeros_like
        sess.forward(mine(ids[:3]), with_logits=False)
        logits = sess.forward(mine(slots), tree=(parents, n_nodes))
        walks = [sess.verify_tree(logits, n_nodes, mine(slots), mine(thresholds), mine(q_try), parents, t, priv)
                 for t, priv in ((0.0, "strict"), (1.0, "strict"), (0.8, "paper"))]
        path = walks[1][0]
        sess.keep_path(4, path)
        again = sess.forward(mine(ids[3:4]))
        return logits, again, walks

    sim_logits, sim_again, sim_walks = program(None, None)
    parts, _ = run_parties(program, config=DEFAULT_MPC_CONFIG)
    assert_same_shares([sim_logits, sim_again], [list(parts[0][:2]), list(parts[1][:2])])
    for (path, out), (path_c, out_c), (path_s, _) in zip(sim_walks, parts[CLIENT][2], parts[SERVER][2]):
        assert path == path_c == path_s  # the accepted path: opened to both
        np.testing.assert_array_equal(np.asarray(out_c), np.asarray(out))  # token or row: the client's only


def test_xor_openings_carry_only_the_bits_they_open():
    """An opening of 1-bit words sends ⌈n/8⌉ bytes and reveals bit 0 only, whatever the
    higher bits of the shares hold (b2a and select_bit open masked bit 0 alone)."""
    high = np.uint64(0xF0F0_F0F0_F0F0_F0F0)

    def program(ctx, p):
        (me,) = ctx.parties
        words = XorShared(jnp.full((1, 10), high | np.uint64(p), jnp.uint64), (me,))
        before = ctx.channel.link.bytes_sent
        got = ctx.channel.open("bits", words, bits=1)
        return np.asarray(got), ctx.channel.link.bytes_sent - before

    parts, _ = run_parties(program)
    for got, sent in parts:
        np.testing.assert_array_equal(got, np.ones(10, np.uint64))  # 0 ⊕ 1 in bit 0, nothing above
        assert sent == 2


def test_server_weight_repr_hides_the_weight_and_mask():
    ctx = mpc.Context(seed=SEED)
    sw = L.setup_weight(ctx, np.full((3, 2), 0.123456))
    text = repr(sw) + str(sw)
    assert "ServerWeight(shape=(3, 2)" in text and "8090" not in text and "Array" not in text


def test_b2a_and_select_bit_open_bit_0_only():
    """b2a and select_bit on XOR words whose high bits hold garbage: the result is bit 0's
    (a whole-word opening would mix the garbage in), and each party sends ⌈n/8⌉ bytes
    for the bits (plus select_bit's 8·n for x − a): nothing above bit 0 leaves a party."""
    n = 10
    bits = np.arange(n, dtype=np.uint64) % np.uint64(3) == 1  # the secret bits
    garbage = np.random.default_rng(5).integers(0, 2**63, size=n, dtype=np.uint64) << np.uint64(1)
    x = np.linspace(-3.0, 3.0, n)

    def program(ctx, p):
        (me,) = ctx.parties
        # the client's word carries the bit and garbage above it; the server's only garbage
        word = bits.astype(np.uint64) | garbage if p == CLIENT else garbage ^ (garbage << np.uint64(7))
        b = XorShared(jnp.asarray(word)[None], (me,))
        xs = ctx.share(x if p == CLIENT else np.zeros_like(x))
        sent = []
        before = ctx.channel.link.bytes_sent
        as_int = ctx.reveal(C.b2a(ctx, b))
        sent.append(ctx.channel.link.bytes_sent - before)
        before = ctx.channel.link.bytes_sent
        chosen = ctx.reveal(C.select_bit(ctx, b, xs))
        sent.append(ctx.channel.link.bytes_sent - before)
        return np.asarray(as_int), np.asarray(chosen), sent

    parts, _ = run_parties(program)
    reveal = 8 * n  # each reveal opens n ring words (8 B each) from each party
    for as_int, chosen, sent in parts:
        np.testing.assert_array_equal(as_int, bits.astype(np.int64))
        np.testing.assert_allclose(chosen, np.where(bits, x, 0.0), atol=1e-4)
        assert sent == [-(-n // 8) + reveal, 8 * n + -(-n // 8) + reveal]


def test_model_bundle_repr_hides_the_weights():
    from pspec_jax.models.bundle import tiny_model

    b = tiny_model("llama", seed=0)
    text = repr(b) + str(b)
    assert "ModelBundle(config=" in text and "Array" not in text and "params" not in text
