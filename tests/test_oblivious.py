"""Oblivious selection at a client-held index."""

import numpy as np

import mpc
from mpc.protocols.oblivious import select_client_index


def test_select_client_index_values_and_cost():
    ctx = mpc.Context(seed=b"ot")
    rng = np.random.default_rng(0)
    rows, width = 5, 49152
    p = rng.normal(size=(rows, width))
    idx = np.array([0, width - 1, 17, 17, 30000])
    P = ctx.share(p, owner=mpc.SERVER)
    mark = ctx.ledger.snapshot()
    got = select_client_index(ctx, P, idx)
    t = ctx.ledger.since(mark).totals()
    assert (t.bytes0, t.bytes1, t.rounds) == (rows * 2, 8 * rows * width, 1)
    fp = ctx.config.fixed
    np.testing.assert_array_equal(np.asarray(ctx.reveal(got)), np.asarray(fp.decode(fp.encode(p[np.arange(rows), idx]))))
    # the server's new share is fresh randomness, unrelated to its old share at the index
    assert not np.any(np.asarray(got.v[1]) == np.asarray(P.v[1])[np.arange(rows), idx])
