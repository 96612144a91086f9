"""Token-tree speculative decoding: the tree mask and positions (a tree pass equals chain
passes along its paths), the cache kept after a step (equals a cache of the accepted
path alone), the static shape and its public topology, exactness of the output law
with branching trees, dynamic and static (χ²/TV, with negative controls that must
fail), greedy trees equal greedy decoding, tokens per step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from laws import exact_law, law_pair, law_test
from pspec_jax.decode import (TRACES, AcceptFirstChild, RecursiveRule, Sampling, TreeDrafter,
                              WithReplacementRule, generate_plain, generate_tree, tree_step_fn)
from pspec_jax.decode.common import prefill
from pspec_jax.decode.spec import init_spec_state
from pspec_jax.decode.tree import (SIBLING_RATES, TOP_SIBLING_RATES, draft_tree, init_tree_state,
                                   static_shape, static_topology)
from pspec_jax.errors import UserError
from pspec_jax.models import forward, tiny_model
from pspec_jax.models.arch import tree_mask

V = 6  # the law of 3 tokens has 216 outcomes
PROMPT = [1, 4, 2]
fwd = jax.jit(forward, static_argnums=0)


# ------------------------------------------------------------------ mask, positions, cache
# A fixed tree of 7 nodes below the root (node 0): 0 -> 1, 2, 3;  1 -> 4, 5;  4 -> 6;  3 -> 7.
PARENT = [-1, 0, 0, 0, 1, 1, 4, 3]
TOKENS = [3, 5, 2, 7, 1, 5, 9, 4]


def _tree_arrays(parent):
    M = len(parent)
    anc = np.eye(M, dtype=bool)
    depth = np.zeros(M, np.int32)
    for i in range(1, M):
        anc[i] |= anc[parent[i]]
        depth[i] = depth[parent[i]] + 1
    return jnp.asarray(anc), jnp.asarray(depth)


def _path(parent, i):
    out = []
    while i > 0:
        out.append(i)
        i = parent[i]
    return out[::-1]  # root's child first


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_tree_pass_equals_chain_passes_along_each_path(family):
    """Each node's logits from one tree pass equal the last logits of a chain pass over
    its root-to-node path, on the same cached prefix (RoPE / learned positions by depth,
    ancestors-only attention); and the mask of a chain gives the causal pass bit for bit."""
    m = tiny_model(family, seed=40, n_layers=2, std=0.7, max_seq_len=64)
    prefix = [5, 9, 11, 2, 6]
    cache = prefill(m.config, m.params, prefix, 32)
    anc, depth = _tree_arrays(PARENT)
    base = len(prefix)
    toks = jnp.asarray(TOKENS, jnp.int32)[None]
    logits, c2 = fwd(m.config, m.params, toks, cache, positions=base + depth,
                     mask=tree_mask(base, anc, 32))
    assert int(c2.length) == base + len(TOKENS)
    for i in range(len(TOKENS)):
        chain = [TOKENS[0]] + [TOKENS[j] for j in _path(PARENT, i)]
        ref, _ = fwd(m.config, m.params, jnp.asarray(chain, jnp.int32)[None], cache)
        np.testing.assert_allclose(np.asarray(logits[0, i]), np.asarray(ref[0, -1]), atol=1e-5, rtol=0)
    # A chain as a tree: lower-triangular ancestors, positions base + [0, T): bit-identical.
    T = 5
    lower = jnp.tril(jnp.ones((T, T), bool))
    a, ca = fwd(m.config, m.params, toks[:, :T], cache)
    b, cb = fwd(m.config, m.params, toks[:, :T], cache, positions=base + jnp.arange(T),
                mask=tree_mask(base, lower, 32))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
               zip(jax.tree_util.tree_leaves(ca), jax.tree_util.tree_leaves(cb)))


def test_keep_path_equals_a_cache_of_the_accepted_path():
    """After a tree pass, keeping the path 0 -> 1 -> 4 -> 6 gives the cache a chain over
    prefix + those tokens builds (rows, length); an empty path keeps the root only."""
    m = tiny_model("llama", seed=41, n_layers=2, std=0.7, max_seq_len=64)
    prefix = [5, 9, 11, 2, 6]
    base = len(prefix)
    cache = prefill(m.config, m.params, prefix, 32)
    anc, depth = _tree_arrays(PARENT)
    _, c2 = fwd(m.config, m.params, jnp.asarray(TOKENS, jnp.int32)[None], cache,
                positions=base + depth, mask=tree_mask(base, anc, 32))
    for path in ([1, 4, 6], [3, 7], [2], []):
        src = jnp.asarray(path + [0] * (len(TOKENS) - 1 - len(path)), jnp.int32)
        kept = c2.keep_path(base + 1, base + src, len(path))
        ref = prefill(m.config, m.params, prefix + [TOKENS[0]] + [TOKENS[j] for j in path], 32)
        n = base + 1 + len(path)
        assert int(kept.length) == int(ref.length) == n
        for lk, lr in zip(kept.layers, ref.layers):
            for name in ("k", "v"):
                np.testing.assert_allclose(np.asarray(lk[name][:, :n]), np.asarray(lr[name][:, :n]),
                                           atol=1e-5, rtol=0)


def test_drafted_tree_is_well_formed_and_branches():
    """draft_tree: parents precede children, depth/ancestors agree with the parents,
    siblings carry distinct tokens (without replacement), the budget is used, the tree
    branches where the drafter is unsure; adaptive stops early with a high threshold."""
    p = tiny_model("llama", seed=25, vocab_size=V, std=1.0, n_layers=3)
    d = p.truncated(1)
    s = Sampling(1.0)
    for kind in ("sample", "top"):
        for thr, lo, hi in ((0.0, 7, 7), (0.5, 1, 6)):
            st = init_spec_state(p, d, PROMPT, 32, 3)
            tree, cache = draft_tree(d.config, s, 7, TreeDrafter(kind, thr), d.params, st.cache_d,
                                     st.tokens, st.length, jax.random.PRNGKey(3))
            n = int(tree.n_nodes)
            assert lo <= n <= hi and int(cache.length) == len(PROMPT) + n
            par, tok = np.asarray(tree.parent), np.asarray(tree.tokens)
            anc, dep = _tree_arrays([-1] + list(par[1:n + 1]))
            assert all(0 <= par[i] < i for i in range(1, n + 1)) and (par[n + 1:] == -1).all()
            assert np.array_equal(np.asarray(tree.ancestors)[:n + 1, :n + 1], np.asarray(anc))
            assert np.array_equal(np.asarray(tree.depth)[:n + 1], np.asarray(dep))
            for v in range(n + 1):
                kids = tok[1:n + 1][par[1:n + 1] == v]
                assert len(set(kids)) == len(kids)
            if thr == 0.0:
                assert np.bincount(par[1:]).max() >= 2  # it branches
                if kind == "top":  # best-first: the root's first child is the drafter's argmax
                    assert tok[1] == int(np.argmax(np.asarray(tree.q[0])))


FLAT = (0.5,)  # a_j = 1/2 at every rank: a static shape that branches at every node
BRANCHY = static_shape(6, FLAT)  # (0, 0, 1, 0, 1, 2): the root has 3 children, node 1 has 2


def test_static_shape_is_a_best_first_tree_of_the_budget():
    """Parents precede children, so every prefix is a tree, and the shape for K nodes is
    the first K nodes of the shape for more (insertion order); a hand-derived case; the
    same tuple on every call (cached, deterministic); flat rates branch from N = 3 on,
    the measured ones (a first child accepted ~0.9 of the time) only for large budgets
    (below, a chain scores higher); bad rates and shapes are refused."""
    for rates in (SIBLING_RATES, TOP_SIBLING_RATES, FLAT, (0.9, 0.2)):
        big = static_shape(40, rates)
        assert len(big) == 40 and all(0 <= v < i for i, v in enumerate(big, start=1))
        for k in (1, 4, 17):
            assert static_shape(k, rates) == big[:k]
    # FLAT: e = 1/2, 1/4, 1/8; node 1 (0.5), then the root's 2nd child (0.25) beats node 1's
    # 1st (0.25) on the lower index, then node 1's 1st (0.25), then the root's 3rd (0.125).
    assert BRANCHY == (0, 0, 1, 0, 1, 2)
    static_shape.cache_clear()
    assert static_shape(16) == static_shape(16) and static_shape(16) is static_shape(16)
    for n in (3, 4, 8, 16, 32):
        assert np.bincount(static_shape(n, FLAT)).max() >= 2, n
    for rates in (SIBLING_RATES, TOP_SIBLING_RATES):
        assert np.bincount(static_shape(64, rates)).max() >= 2, rates
    for bad in ((), (0.5, 1.0), (0.0,), [0.5]):
        with pytest.raises((UserError, TypeError)):
            static_shape(4, bad)
    for bad in ((1,), (0, 2), (), [0]):
        with pytest.raises(UserError, match="shape"):
            TreeDrafter("sample", shape=bad)


def test_static_topology_is_the_drafted_trees_structure():
    """A static draft (sampled or top, full or stopped early by the adaptive rule) has
    exactly the parents / depths / ancestors `static_topology` derives from (shape,
    node count) alone, and the prefix of the shape as its parents; the adaptive stop
    keeps at least one node, and a budget that does not match the shape is refused."""
    p = tiny_model("llama", seed=25, vocab_size=V, std=1.0, n_layers=3)
    d = p.truncated(1)
    draft = jax.jit(draft_tree, static_argnums=(0, 1, 2, 3))
    counts = set()
    for kind in ("sample", "top"):
        for thr in (0.0, 0.05, 0.3):
            for seed in range(4):
                st = init_spec_state(p, d, PROMPT, 32, seed)
                tree, cache = draft(d.config, Sampling(1.0), 6, TreeDrafter(kind, thr, shape=BRANCHY, rates=FLAT),
                                    d.params, st.cache_d, st.tokens, st.length, jax.random.PRNGKey(seed))
                n = int(tree.n_nodes)
                counts.add(n)
                assert 1 <= n <= 6 and (thr > 0 or n == 6) and int(cache.length) == len(PROMPT) + n
                par, dep, anc = static_topology(BRANCHY, n)
                assert np.array_equal(np.asarray(tree.parent), par)
                assert np.array_equal(np.asarray(tree.depth), dep)
                assert np.array_equal(np.asarray(tree.ancestors), anc)
                tok = np.asarray(tree.tokens)
                for v in range(n + 1):  # siblings differ (without replacement / next best)
                    kids = tok[1:n + 1][par[1:n + 1] == v]
                    assert len(set(kids)) == len(kids)
    assert len(counts) >= 3, counts  # the adaptive rule stops at different places
    par, dep, anc = static_topology(BRANCHY, 2, M=9)
    assert list(par) == [-1, 0, 0] + [-1] * 6 and list(dep) == [0, 1, 1] + [0] * 6
    assert np.array_equal(anc[3:], np.eye(9, dtype=bool)[3:])
    with pytest.raises(UserError, match="budget"):
        st = init_spec_state(p, d, PROMPT, 32, 0)
        draft_tree(d.config, Sampling(1.0), 5, TreeDrafter("sample", shape=BRANCHY), d.params,
                   st.cache_d, st.tokens, st.length, jax.random.PRNGKey(0))


# ------------------------------------------------------------------ exactness of the law
def sample_tree(private, drafter, sampling, n_nodes, strategy, rule, n_runs, seed=0, n=3):
    """First n emitted tokens of `n_runs` independent tree runs (vmapped steps), the
    fraction of first-step trees with a node of >= 2 children (the trees must branch)
    and their mean node count."""
    rows = 32
    s0 = init_tree_state(private, drafter, PROMPT, rows, n_nodes, 0)
    states = jax.vmap(lambda k: s0.replace(key=k))(jax.random.split(jax.random.PRNGKey(seed), n_runs))
    step = jax.jit(jax.vmap(functools.partial(tree_step_fn, private.config, drafter.config, sampling,
                                              n_nodes, strategy, rule), in_axes=(None, None, 0)))
    branched = nodes = None
    for _ in range(n):  # each step emits >= 1 token
        states, info = step(private.params, drafter.params, states)
        if branched is None:
            par = info.tree.parent  # (R, M)
            kids = jnp.sum(par[:, :, None] == jnp.arange(n_nodes + 1)[None, None, :], axis=1)  # (R, M)
            branched = float(jnp.mean(jnp.max(kids, axis=-1) >= 2))
            nodes = float(jnp.mean(info.n_nodes))
    assert int(jnp.min(states.length)) >= len(PROMPT) + n
    return np.asarray(states.tokens[:, 0, len(PROMPT):len(PROMPT) + n]), branched, nodes


CASES = [  # (pair, target law, N, drafter, negative controls)
    ("llama-vs-gpt2", Sampling(1.0), 6, TreeDrafter("sample"), (WithReplacementRule(),)),
    ("truncated", Sampling(0.8, top_k=4), 5, TreeDrafter("top"), (AcceptFirstChild(),)),
    ("truncated", Sampling(1.3, top_p=0.9), 6, TreeDrafter("sample", threshold=0.1), ()),
    # Static shapes: the topology is fixed; the adaptive one stops before a node whose
    # estimate (from earlier draws only) is low, on about half of the first steps.
    ("llama-vs-gpt2", Sampling(1.0), 6, TreeDrafter("sample", shape=BRANCHY, rates=FLAT),
     (WithReplacementRule(),)),
    ("truncated", Sampling(1.0), 6, TreeDrafter("sample", threshold=0.1, shape=BRANCHY, rates=FLAT), ()),
]


@pytest.mark.parametrize("case,sampling,n_nodes,strategy,controls", CASES)
def test_tree_output_law_is_exact_and_negative_controls_fail(case, sampling, n_nodes, strategy, controls):
    private, drafter = law_pair(case, V)
    law = exact_law(private, PROMPT, sampling, V)
    n_runs = 20000
    samples, branched, nodes = sample_tree(private, drafter, sampling, n_nodes, strategy, RecursiveRule(),
                                           n_runs, seed=1)
    assert branched > 0.5, branched  # most trees branch
    if strategy.shape is not None and strategy.threshold > 0:
        assert 2 <= nodes < n_nodes - 0.5, nodes  # the adaptive stop cuts often
    pval, tv, thr = law_test(samples, law, V)
    assert pval > 1e-3 and tv < thr, (pval, tv, thr)
    for rule in controls:  # each fails by a wide margin (TV ≈ 0.15 and ≈ 1 against ≈ 0.02)
        bad, _, _ = sample_tree(private, drafter, sampling, n_nodes, strategy, rule, 8000, seed=1)
        bpval, btv, _ = law_test(bad, law, V)
        assert bpval < 1e-6 and btv > thr, (rule, bpval, btv, thr)


# ------------------------------------------------------------------ greedy, loop, CLI-level checks
def _model(family="llama"):
    return tiny_model(family, seed=30, n_layers=2, std=0.7, max_seq_len=128)


@pytest.mark.parametrize("family,n_nodes,adaptive,dynamic", [
    ("llama", 6, False, False), ("gpt2", 1, False, False), ("llama", 16, True, False), ("llama", 6, False, True)])
def test_greedy_tree_equals_greedy_plain(family, n_nodes, adaptive, dynamic):
    """Static trees (the default, full or adaptive) and the dynamic one follow the
    private argmax path."""
    private = _model(family)
    drafter = private.truncated(1)
    g = Sampling(0.0)
    plain = generate_plain(private, [5, 9, 11], 24, g)
    tree = generate_tree(private, drafter, [5, 9, 11], 24, n_nodes, g, adaptive=adaptive,
                         tree_drafter=TreeDrafter("top") if dynamic else None)
    assert tree.tokens == plain.tokens
    assert tree.extra["tree_kind"] == "top" and tree.extra["tree_static"] is not dynamic
    assert (tree.extra["nodes_per_step"][0] < n_nodes) if adaptive else (tree.extra["nodes_per_step"][0] == n_nodes)


def test_self_drafting_tree_accepts_a_full_depth_path_and_compiles_once():
    """With the private model as its own drafter every step accepts a root-to-leaf path
    (the walk never rejects a child drawn from p itself), and the loop compiles once."""
    m = tiny_model("llama", seed=33, n_layers=2, std=0.7, max_seq_len=96, d_model=40)
    TRACES.clear()
    r = generate_tree(m, m, [3, 4], 30, 4, Sampling(1.0), seed=5)
    assert TRACES["tree_step"] == 1
    assert all(n >= 1 for n in r.accepted_per_step[:-1]) and r.tokens_per_step > 2
    generate_tree(m, m, [3, 4, 5, 6], 20, 4, Sampling(1.0), seed=6)
    assert TRACES["tree_step"] == 1


def test_tokens_per_step_trees_vs_chain(capsys):
    """Reports mean tokens per step (128 vmapped runs × 6 steps) of dynamic trees N = 4,
    16, the default static tree N = 16 and the chain γ = 4 on a tiny pair whose drafter
    is the private model's first 3 of 4 layers (`scripts/tree_tokens_per_step.py` makes
    the fuller table); more nodes give more tokens per step."""
    from pspec_jax.decode import SpeculativeRule, spec_step_fn
    from pspec_jax.decode.tree import default_drafter

    private = tiny_model("llama", seed=34, n_layers=4, std=0.4, vocab_size=32, max_seq_len=256)
    drafter = private.truncated(3)
    s = Sampling(1.0)
    prompt = [1, 2, 3, 4, 5]

    def tokens_per_step(fn, s0, runs=128, steps=6):
        states = jax.vmap(lambda k: s0.replace(key=k))(jax.random.split(jax.random.PRNGKey(0), runs))
        step = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))
        acc = 0.0
        for _ in range(steps):
            states, info = step(private.params, drafter.params, states)
            acc += float(jnp.mean(info.n_accepted))
        return 1 + acc / steps

    rows = {"chain γ=4": tokens_per_step(
        functools.partial(spec_step_fn, private.config, drafter.config, s, 4, SpeculativeRule()),
        init_spec_state(private, drafter, prompt, 64, 0))}
    for name, n, shape_budget in (("dynamic N=4", 4, None), ("dynamic N=16", 16, None), ("static N=16", 16, 16)):
        rows[name] = tokens_per_step(
            functools.partial(tree_step_fn, private.config, drafter.config, s, n,
                              default_drafter(s, n_nodes=shape_budget), RecursiveRule()),
            init_tree_state(private, drafter, prompt, 64, n, 0))
    with capsys.disabled():
        print("\n" + ", ".join(f"{k}: {v:.2f} tokens/step" for k, v in rows.items()))
    assert 1.5 < rows["dynamic N=4"] < rows["dynamic N=16"] and rows["static N=16"] > 1.5


def test_bad_tree_budget():
    m = _model()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UserError, match="tree"):
            generate_tree(m, m.truncated(1), [1, 2], 4, bad)
    with pytest.raises(UserError, match="context"):
        generate_tree(m, m.truncated(1), list(range(60)) * 2, 8, 16)
    with pytest.raises(UserError, match="kind"):
        TreeDrafter("beam")


# ------------------------------------------------------------------ the command line
def test_cli_tree_json_matches_the_library(capsys, tiny_folder):
    import json

    from transformers import PreTrainedTokenizerFast

    from pspec_jax.models import load_model

    priv, pub = tiny_folder("private", seed=1, std=0.7), tiny_folder("public", seed=2, n_layers=1)
    rc, out, err = run_cli(capsys, "generate", "the theme", "--mode", "spec", "--tree", "5", "--adaptive",
                        "--private", str(priv), "--public", str(pub), "--max-new-tokens", "9",
                        "--seed", "4", "--json", "--ignore-eos")
    assert rc == 0, err
    d = json.loads(out)
    assert d["tree"] == 5 and d["adaptive"] is True and len(d["tokens"]) == 9
    assert len(d["nodes_per_step"]) == d["steps"] and all(1 <= n <= 5 for n in d["nodes_per_step"])
    ids = PreTrainedTokenizerFast.from_pretrained(str(priv))("the theme")["input_ids"]
    ref = generate_tree(load_model(priv), load_model(pub), ids, 9, 5, Sampling(1.0), seed=4, adaptive=True)
    assert d["tokens"] == ref.tokens and d["accepted_per_step"] == ref.accepted_per_step
    rc, out, err = run_cli(capsys, "generate", "the theme", "--tree", "5", "--adaptive", "--private", str(priv),
                        "--public", str(pub), "--max-new-tokens", "4", "--seed", "1")
    assert rc == 0 and "tree of <= 5 nodes" in err and "adaptive" in err, err


@pytest.mark.parametrize("argv,msg", [
    (["--tree", "0"], "must be an integer >= 1, got 0"),
    (["--tree", "-2"], "must be an integer >= 1"),
    (["--mode", "plain", "--tree", "4"], "--tree does not apply to --mode plain"),
    (["--mode", "secure", "--tree", "4"], "--tree does not apply to --mode secure"),
    (["--mode", "post", "--tree", "4", "--gamma", "3"], "not both"),
    (["--adaptive"], "--adaptive needs --tree"),
    (["--tree", "4", "--gamma", "3"], "not both"),
])
def test_cli_tree_bad_options_one_line_errors(capsys, argv, msg):
    rc, out, err = run_cli(capsys, "generate", "hi", *argv, "--private", "/nonexistent/model")
    assert_one_line_error(rc, err)
    assert msg in err, err
