"""The private accept test and first-rejection index against the plain rule."""

import numpy as np

import mpc
from mpc.protocols import compare as C
from mpc.protocols.rejection import accept_flags, first_rejection


def test_prefix_and():
    ctx = mpc.Context(seed=b"pa")
    words = np.array([0b1111, 0b1011, 0b0111, 0, 0b11111111, 0b11101111], np.uint64)
    x = mpc.XorShared.from_parties(words ^ np.uint64(12345), np.full(6, 12345, np.uint64))
    got = np.asarray(ctx.channel.open("t", C.prefix_and(ctx, x, 8)))
    want = [0b1111, 0b11, 0b111, 0, 0b11111111, 0b1111]
    np.testing.assert_array_equal(got, want)


def test_accept_and_first_rejection_match_plain_rule():
    rng = np.random.default_rng(0)
    gamma, V = 6, 500
    for trial in range(4):
        ctx = mpc.Context(seed=b"rej%d" % trial)
        logits = rng.normal(size=(gamma, V)) * 3
        e = np.exp(logits - logits.max(-1, keepdims=True))
        fp = ctx.config.fixed
        e = np.asarray(fp.decode(fp.encode(e)))
        Z = e.sum(-1)
        p = e / Z[:, None]
        drafts = rng.integers(0, V, size=gamma)
        drafts[:3] = np.argmax(p[:3], -1)  # likely accepts first
        a = rng.uniform(size=gamma) * p[np.arange(gamma), drafts] * rng.choice([0.5, 1.5], size=gamma)
        W, Zs = ctx.share(e, owner=mpc.SERVER), ctx.share(Z, owner=mpc.SERVER)
        acc = accept_flags(ctx, W, Zs, drafts, a)
        want = a * Z < e[np.arange(gamma), drafts]
        np.testing.assert_array_equal(np.asarray(ctx.channel.open("t", acc)) & 1, want.astype(np.uint64))
        mark = ctx.ledger.snapshot()
        n = int(first_rejection(ctx, acc))
        assert n == int(np.cumprod(want).sum())
        t = ctx.ledger.since(mark).totals()
        assert t.rounds == 3 + 2  # ⌈log2 6⌉ ANDs + b2a + open


def test_first_rejection_at_and_past_64_drafts():
    """γ = 64 fills the packed word (all accepted → n = 64, first rejection at the last
    draft → 63); γ = 65 would not fit in it and is refused, not silently biased."""
    import pytest

    ctx = mpc.Context(seed=b"rej64")
    ones = np.ones(64, np.uint64)
    for flags, want in ((ones, 64), (np.concatenate([ones[:63], [0]]).astype(np.uint64), 63)):
        acc = mpc.XorShared.from_parties(flags ^ np.uint64(7), np.full(64, 7, np.uint64))
        assert int(first_rejection(ctx, acc)) == want
    acc = mpc.XorShared.from_parties(np.ones(65, np.uint64), np.zeros(65, np.uint64))
    with pytest.raises(ValueError, match="γ must be in"):
        first_rejection(ctx, acc)


# ----------------------------------------------------------------------- token trees
def _plain_walk(p, parents, n_nodes, tokens, u, q_try):
    """The recursive rejection walk in float64 (`pspec_jax.decode.tree`'s rule) with the
    coins u: (accepted path, the residual law at its last node)."""
    parent = np.array((-1,) + tuple(parents))
    v, r, path = 0, p[0].copy(), []
    while True:
        kids = [i for i in range(1, n_nodes + 1) if parent[i] == v]
        for c in kids:
            if u[c] * q_try[c][tokens[c]] < r[tokens[c]]:
                v, r = c, p[c].copy()
                path.append(c)
                break
            r = np.maximum(r - q_try[c], 0)
            r = r / r.sum()
        else:
            return path, r


def _tree_case(rng, parents, V):
    M = len(parents) + 1
    logits = rng.normal(size=(M, V)) * 2.5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    parent = np.array((-1,) + tuple(parents))
    tokens, q_try = np.zeros(M, np.int64), np.zeros((M, V))
    for v in range(M):  # each node's children drawn from q_v without replacement
        q_v = np.exp(logits[v] + rng.normal(size=V) * 0.7)  # a drafter near the model
        q_v /= q_v.sum()
        for c in np.flatnonzero(parent == v):
            q_try[c] = q_v / q_v.sum()
            tokens[c] = rng.choice(V, p=q_try[c])
            q_v = q_v.copy()
            q_v[tokens[c]] = 0.0
    return logits, p, tokens, q_try


def test_tree_index_literals():
    from mpc.protocols.rejection import tree_index

    t = tree_index((0, 0, 1, 1, 0))  # root: 1, 2, 5; node 1: 3, 4
    np.testing.assert_array_equal(t["rank"], [0, 1, 2, 1, 2, 3])
    np.testing.assert_array_equal(t["prev"], [-1, -1, 1, -1, 3, 2])
    M = 6
    sets = [set(row) - {2 * M - 2} for row in t["literals"]]
    acc, rej = (lambda i: i - 1), (lambda i: M - 1 + i - 1)
    assert sets[3] == {acc(4), rej(3), acc(1)}  # node 4: accepted, after 3 was rejected, below 1
    assert sets[4] == {acc(5), rej(2), rej(1)}
    import pytest
    with pytest.raises(ValueError, match="precede"):
        tree_index((0, 2, 1))


def test_tree_verify_follows_the_plain_walk():
    """Paths (both privacy modes) equal the float64 walk's with the same coins on random
    branching trees (padding slots included); paper mode opens p at the path's last node;
    strict mode's token lies in the support of that node's residual."""
    from mpc.protocols.rejection import tree_verify

    program = mpc.secure_jit(tree_verify)  # one compilation per mode for all trials
    rng = np.random.default_rng(3)
    V = 48
    parents = (0, 0, 1, 1, 0, 2, 3)
    ctxs = {privacy: mpc.Context(seed=privacy.encode()) for privacy in ("paper", "strict")}
    for trial in range(8):
        logits, p, tokens, q_try = _tree_case(rng, parents, V)
        n_nodes = len(parents) if trial % 3 else 5  # a pruned (adaptive) tree: slots 6, 7 padding
        u = rng.uniform(size=len(tokens))
        a = u * q_try[np.arange(len(tokens)), tokens]
        want_path, want_r = _plain_walk(p, parents, n_nodes, tokens, u, q_try)
        for privacy, ctx in ctxs.items():
            sh = ctx.share(logits, owner=mpc.SERVER)
            on_path, out = program(ctx, sh, np.int32(n_nodes), tokens, a, q_try, parents=parents,
                                   temperature=1.0, privacy=privacy)
            path = [i + 1 for i in np.flatnonzero(np.asarray(on_path))]
            assert path == want_path, (trial, privacy)
            last = path[-1] if path else 0
            if privacy == "paper":
                np.testing.assert_allclose(np.asarray(out), p[last], atol=2e-4)
            else:
                assert want_r[int(out)] > 0


def test_tree_verify_greedy_follows_the_argmax_path():
    from mpc.protocols.rejection import tree_verify

    program = mpc.secure_jit(tree_verify)
    ctx = mpc.Context(seed=b"treeg")
    rng = np.random.default_rng(4)
    V, parents = 40, (0, 0, 1, 2, 1, 3)
    for trial in range(4):
        logits = rng.normal(size=(len(parents) + 1, V)) * 3
        best = logits.argmax(-1)
        tokens = rng.integers(0, V, size=len(parents) + 1)
        for i, par in enumerate(parents, start=1):  # make some nodes the argmax of their parent
            if rng.uniform() < 0.6:
                tokens[i] = best[par]
        want, v = [], 0
        while True:
            kids = [i for i, par in enumerate(parents, start=1) if par == v and tokens[i] == best[v]]
            if not kids:
                break
            v = kids[0]
            want.append(v)
        on_path, token = program(ctx, ctx.share(logits, owner=mpc.SERVER), np.int32(len(parents)), tokens,
                                 np.zeros(len(tokens)), np.zeros((len(tokens), V)), parents=parents,
                                 temperature=0.0)
        assert [i + 1 for i in np.flatnonzero(np.asarray(on_path))] == want
        assert int(token) == best[want[-1] if want else 0]


def test_tree_verify_greedy_rounds_and_path_bytes():
    """Greedy walk: argmax + one batch of comparisons + ⌈log2 L⌉ AND rounds for the path
    + opening the path (⌈(M−1)/8⌉ bytes from each party) + opening the token."""
    import math

    from mpc.protocols.rejection import tree_index, tree_verify
    from mpc.protocols.sampling import argmax

    ctx = mpc.Context(seed=b"treecost")
    parents = (0, 1, 0, 2, 0, 1)
    M, V = len(parents) + 1, 40
    logits = ctx.share(np.random.default_rng(5).normal(size=(M, V)), owner=mpc.SERVER)
    bits = math.ceil(math.log2(V)) + 2
    mark = ctx.ledger.snapshot()
    argmax(ctx, logits)
    C.msb(ctx, ctx.share(np.zeros(2 * (M - 1)), owner=mpc.SERVER, frac=0), bits=bits)
    parts = ctx.ledger.since(mark).totals().rounds
    mark = ctx.ledger.snapshot()
    tree_verify(ctx, logits, M - 1, np.zeros(M, np.int32), np.zeros(M), np.zeros((M, V)), parents=parents,
                temperature=0.0)
    led = ctx.ledger.since(mark)
    width = tree_index(parents)["literals"].shape[1]
    assert led.totals().rounds == parts + math.ceil(math.log2(width)) + 1 + 1
    opened = [e for e in led.entries if e.op.endswith("open_path")]
    assert len(opened) == 1 and opened[0].bytes0 == opened[0].bytes1 == math.ceil((M - 1) / 8)
