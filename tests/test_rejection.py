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
