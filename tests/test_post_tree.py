"""Token trees in POST: the secure pass over a tree (mask and positions public), the
secure cache keeping the accepted path, and the private walk over siblings inside the full
secure decode loop — greedy tree POST equals greedy decoding, and the output law is
exactly the private model's (χ²/TV on the first 3 tokens, both privacy modes, with an
always-accept negative control that must fail)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from laws import exact_law, law_test
from pspec_jax.decode import Sampling, generate_plain
from pspec_jax.decode.common import prefill
from pspec_jax.decode.post import generate_post, tree_width
from pspec_jax.decode.tree import TreeDrafter, static_shape
from pspec_jax.models import forward, tiny_model
from pspec_jax.models.arch import tree_layout, tree_mask
from pspec_jax.secure import SecureSession

fwd = jax.jit(forward, static_argnums=0)


def test_tree_width_buckets():
    assert [tree_width(n, 32) for n in (1, 2, 3, 4, 8, 9, 16, 17, 32)] == [2, 3, 5, 5, 9, 17, 17, 33, 33]
    assert tree_width(5, 6) == 7 and tree_width(16, 16) == 17


# ------------------------------------------------------------------ the full secure loop
LAW_V = 5  # the law of the first 3 tokens has 125 outcomes
LAW_PROMPT = [1, 4, 2]
N_NODES = 6
# A branching static shape for this weakly aligned pair (the default rates grow chains up
# to N = 22): 0 -> 1, 3, 5;  1 -> 2, 6;  2 -> 4.
SHAPE = static_shape(N_NODES, (0.5, 0.45))


@pytest.fixture(scope="module")
def pair_and_session():
    private = tiny_model("llama", seed=25, vocab_size=LAW_V, std=1.0, n_layers=3)
    drafter = private.truncated(1)  # accepts and rejections are both common at T = 1
    session = SecureSession(private.config, private.params, max_len=len(LAW_PROMPT) + 3 + N_NODES + 1,
                            seed=b"post-tree-tests")
    return private, drafter, session


def test_secure_tree_pass_and_keep_path_equal_the_plain_ones(pair_and_session):
    """The secure pass over a branching tree (an adaptive one: slot 6 is padding) gives the
    plain tree pass's logits; after keeping the path 1 -> 2 -> 4 the secure cache serves
    the next pass as a chain over the prefix and the path would. (The same session and
    pass widths as the decoding tests below: compiled once.)"""
    m, _, session = pair_and_session
    session.rollback(0)
    prefix, slots, n_nodes = [1, 4], [2, 0, 3, 1, 4, 2, 0], 5
    session.forward(prefix, with_logits=False)
    logits = session.reveal_logits(session.forward(slots, tree=(SHAPE, n_nodes)))[0]
    depth, anc = tree_layout(SHAPE, n_nodes)
    rows = session.max_len
    want, _ = fwd(m.config, m.params, jnp.asarray(slots, jnp.int32)[None], prefill(m.config, m.params, prefix, rows),
                  positions=len(prefix) + depth, mask=tree_mask(len(prefix), jnp.asarray(anc), rows))
    np.testing.assert_allclose(logits[:n_nodes + 1], np.asarray(want[0, :n_nodes + 1]), atol=0.05)
    session.keep_path(len(prefix) + 1, [1, 2, 4])
    assert session.length == len(prefix) + 4
    nxt = session.reveal_logits(session.forward([3] + [0] * N_NODES, tree=(SHAPE, 0)))[0, 0]  # the root alone
    chain = prefix + [slots[0], slots[1], slots[2], slots[4], 3]
    ref, _ = fwd(m.config, m.params, jnp.asarray(chain, jnp.int32)[None], prefill(m.config, m.params, [], rows))
    np.testing.assert_allclose(nxt, np.asarray(ref[0, -1]), atol=0.05)


def test_greedy_tree_post_equals_greedy_plain(pair_and_session):
    private, drafter, session = pair_and_session
    plain = generate_plain(private, LAW_PROMPT, 3, Sampling(0.0))
    res = generate_post(private, drafter, LAW_PROMPT, 3, sampling=Sampling(0.0), session=session, seed=0,
                        tree=N_NODES, tree_drafter=TreeDrafter(kind="top", shape=SHAPE))
    assert res.tokens == plain.tokens
    assert res.extra["tree"] == N_NODES and res.drafted == sum(res.extra["nodes_per_step"])
    assert res.extra["secure_passes"] == 1 + res.steps


def _sample_tree_post(private, drafter, session, privacy, n_runs, seed, adaptive=False, rule="exact"):
    mark = session.ledger.snapshot()
    out = []
    for i in range(n_runs):
        res = generate_post(private, drafter, LAW_PROMPT, 3, sampling=Sampling(1.0), privacy=privacy,
                            session=session, seed=seed * 1_000_003 + i, rule=rule, tree=N_NODES,
                            tree_drafter=TreeDrafter(kind="sample", shape=SHAPE, threshold=0.15 if adaptive else 0.0,
                                                     rates=(0.5, 0.45)))
        out.append(res.tokens)
        del session.ledger.entries[mark:]  # keep the ledger small across hundreds of runs
    return np.array(out)


# CI runs the strict case (full branching shape, negative control); the paper case on
# adaptive trees is heavy (CI time; the tree walk's paper row is also checked against
# float64 with the same coins in tests/test_rejection.py)
@pytest.mark.parametrize("privacy,adaptive,control", [
    pytest.param("paper", True, False, marks=pytest.mark.heavy),
    pytest.param("strict", False, True, marks=pytest.mark.slow)])
def test_tree_post_output_law_is_exact_and_negative_control_fails(pair_and_session, privacy, adaptive, control):
    """The first 3 tokens of tree POST over the full secure path follow the private
    model's law (χ² and TV), with trees that branch: strict (sibling residuals and the
    draw inside MPC) on the full shape, paper (the client's residual) on adaptive trees;
    accepting every draft (thresholds 0) must fail the same test."""
    private, drafter, session = pair_and_session
    law = exact_law(private, LAW_PROMPT, Sampling(1.0), LAW_V)
    samples = _sample_tree_post(private, drafter, session, privacy, 300, seed=1, adaptive=adaptive)
    pval, tv, thr = law_test(samples, law, LAW_V)
    assert pval > 1e-3 and tv < thr, (pval, tv, thr)
    if control:
        bad = _sample_tree_post(private, drafter, session, privacy, 150, seed=2, rule="always_accept")
        bpval, btv, bthr = law_test(bad, law, LAW_V)
        assert bpval < 1e-6 and btv > bthr, (bpval, btv, bthr)
