"""Speculative decoding: the accept rule, exactness of the output law (χ² and TV against
the exact law, with a negative control that must fail), greedy equivalence, no recompiles."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pspec_jax.decode import (TRACES, AlwaysAccept, Sampling, SpeculativeRule, generate_plain,
                              generate_spec, plain_step_fn, spec_step_fn)
from pspec_jax.decode.plain import init_plain_state
from pspec_jax.decode.spec import init_spec_state
from pspec_jax.errors import UserError
from laws import exact_law, law_pair, law_test
from pspec_jax.models import tiny_model

V = 6  # small vocabulary: the law of 3 tokens has 216 outcomes
PROMPT = [1, 4, 2]


def sample_spec(private, drafter, sampling, gamma, rule, n_runs, seed=0, n=3):
    """First n emitted tokens of `n_runs` independent speculative runs (vmapped steps)."""
    rows = 32
    s0 = init_spec_state(private, drafter, PROMPT, rows, 0, buffer=rows + gamma + 3)
    keys = jax.random.split(jax.random.PRNGKey(seed), n_runs)
    states = jax.vmap(lambda k: s0.replace(key=k))(keys)
    step = jax.jit(jax.vmap(functools.partial(spec_step_fn, private.config, drafter.config,
                                              sampling, gamma, rule),
                            in_axes=(None, None, 0)))
    for _ in range(n):  # each step emits >= 1 token
        states, _ = step(private.params, drafter.params, states)
    assert int(jnp.min(states.length)) >= len(PROMPT) + n
    return np.asarray(states.tokens[:, 0, len(PROMPT):len(PROMPT) + n])


def sample_plain(model, sampling, n_runs, seed=0, n=3):
    s0 = init_plain_state(model.config, model.params, PROMPT, 16, 0)
    states = jax.vmap(lambda k: s0.replace(key=k))(jax.random.split(jax.random.PRNGKey(seed), n_runs))
    step = jax.jit(jax.vmap(functools.partial(plain_step_fn, model.config, sampling),
                            in_axes=(None, 0)))
    for _ in range(n):
        states, _ = step(model.params, states)
    return np.asarray(states.tokens[:, 0, len(PROMPT):len(PROMPT) + n])


CASES = [  # (pair, target law, γ, also run the negative control)
    ("llama-vs-gpt2", Sampling(0.8, top_k=4), 3, True),
    ("truncated", Sampling(1.3, top_p=0.85), 4, False),
]


@pytest.mark.parametrize("case,sampling,gamma,control", CASES)
def test_spec_output_law_is_exact_and_negative_control_fails(case, sampling, gamma, control):
    private, drafter = law_pair(case, V)
    law = exact_law(private, PROMPT, sampling, V)
    n_runs = 20000
    samples = sample_spec(private, drafter, sampling, gamma, SpeculativeRule(), n_runs, seed=1)
    pval, tv, thr = law_test(samples, law, V)
    assert pval > 1e-3, (pval, tv, thr)
    assert tv < thr, (pval, tv, thr)
    if not control:
        return
    # Negative control: accepting every draft emits the drafter's law; the same test must fail.
    bad = sample_spec(private, drafter, sampling, gamma, AlwaysAccept(), n_runs, seed=1)
    bpval, btv, _ = law_test(bad, law, V)
    assert bpval < 1e-6 and btv > thr, (bpval, btv, thr)


def test_plain_sampling_law_is_exact():
    model = tiny_model("llama", seed=26, vocab_size=V, std=1.0)
    sampling = Sampling(0.9, top_k=5)
    law = exact_law(model, PROMPT, sampling, V)
    samples = sample_plain(model, sampling, 20000, seed=2)
    pval, tv, thr = law_test(samples, law, V)
    assert pval > 1e-3 and tv < thr, (pval, tv, thr)
    other = exact_law(model, PROMPT, Sampling(1.3), V)  # the test must reject a nearby law
    pval2, tv2, thr2 = law_test(samples, other, V)
    assert pval2 < 1e-6 and tv2 > thr2, (pval2, tv2, thr2)


# ------------------------------------------------------------------ the accept rule alone
def _rule_law(p, q, n_keys=100000, seed=0):
    """Law of the first emitted token for γ = 1: draft x ~ q, then the rule."""
    p = jnp.asarray(p, jnp.float32)
    q = jnp.asarray(q, jnp.float32)
    rule = SpeculativeRule()

    def one(k):
        kd, ka = jax.random.split(k)
        x = jax.random.categorical(kd, jnp.log(q)).astype(jnp.int32)
        n, y = rule(ka, jnp.stack([p, p]), q[None], x[None])
        return jnp.where(n == 1, x, y), n

    first, n = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), n_keys))
    return np.bincount(np.asarray(first), minlength=p.shape[0]) / n_keys, float(jnp.mean(n))


def test_accept_rule_single_draft_law_and_acceptance_rate():
    p = np.array([0.5, 0.3, 0.2, 0.0, 0.0])
    q = np.array([0.1, 0.1, 0.2, 0.3, 0.3])
    emp, acc = _rule_law(p, q)
    assert np.abs(emp - p).sum() / 2 < 0.006
    assert emp[3] == 0 and emp[4] == 0  # p = 0 tokens are never emitted
    assert abs(acc - np.minimum(p, q).sum()) < 0.006  # P(accept) = Σ min(p, q) = α


def test_accept_rule_greedy_and_edge_cases():
    rule = SpeculativeRule()
    key = jax.random.PRNGKey(0)
    oh = lambda i, n=4: jax.nn.one_hot(jnp.asarray(i), n, dtype=jnp.float32)  # noqa: E731
    drafts = jnp.array([2, 1, 3], jnp.int32)
    p = oh(jnp.array([2, 1, 0, 3]))  # private argmaxes: agree, agree, disagree, (bonus 3)
    q = oh(drafts)
    for s in range(20):
        n, y = rule(jax.random.PRNGKey(s), p, q, drafts)
        assert int(n) == 2 and int(y) == 0
    n, y = rule(key, p, oh(jnp.array([2, 1, 0])), jnp.array([2, 1, 0], jnp.int32))
    assert int(n) == 3 and int(y) == 3  # all accepted: bonus from p_γ
    # p == q: always accept everything, even for non-degenerate rows
    pq = jax.nn.softmax(jax.random.normal(key, (4, 4)))
    for s in range(20):
        n, _ = rule(jax.random.PRNGKey(s), pq, pq[:3], jnp.array([0, 1, 2], jnp.int32))
        assert int(n) == 3


# ------------------------------------------------------------------ greedy, metrics, compile
def _model(family="llama"):
    """One tiny config shared by the tests below so they reuse compiled steps."""
    return tiny_model(family, seed=30, n_layers=2, std=0.7, max_seq_len=128)


@pytest.mark.parametrize("family,gamma", [("llama", 3), ("gpt2", 1)])
def test_greedy_spec_equals_greedy_plain(family, gamma):
    private = _model(family)
    drafter = private.truncated(1)
    g = Sampling(0.0)
    plain = generate_plain(private, [5, 9, 11], 24, g)
    spec = generate_spec(private, drafter, [5, 9, 11], 24, gamma, g)
    assert spec.tokens == plain.tokens
    assert len(spec.tokens) == 24 and sum(spec.accepted_per_step) + spec.steps >= 24
    assert 0 < spec.steps <= 24


def test_self_drafting_accepts_everything():
    m = _model()
    s = Sampling(1.0)
    r = generate_spec(m, m, [3, 4], 20, 3, s, seed=5)
    assert r.accepted_per_step[:-1] == [3] * (len(r.accepted_per_step) - 1)
    assert r.tokens_per_step > 3 and r.alpha > 0.999 and r.acceptance_rate > 0.95


def test_decode_loops_compile_once():
    private = tiny_model("llama", seed=32, n_layers=2, max_seq_len=96, d_model=48, n_heads=6,
                         n_kv_heads=3)  # a config no other test uses: the first run traces
    drafter = private.truncated(1)
    s = Sampling(1.0, top_k=10)
    TRACES.clear()
    r = generate_spec(private, drafter, [1, 2, 3], 30, 3, s, seed=0)
    assert TRACES["spec_step"] == 1 and r.steps > 3
    generate_spec(private, drafter, [4, 5, 6, 7, 8], 40, 3, s, seed=1)  # same shapes: no retrace
    assert TRACES["spec_step"] == 1
    generate_plain(private, [1, 2, 3], 30, s)
    generate_plain(private, [9, 8, 7, 6], 50, s, seed=3)
    assert TRACES["plain_step"] == 1
    assert TRACES["prefill"] <= 2  # one per model and prompt bucket


def test_eos_and_max_new_tokens_and_bad_input():
    m = _model()
    d = m.truncated(1)
    g = Sampling(0.0)
    ref = generate_plain(m, [1, 2], 12, g)
    eos = ref.tokens[5]
    r = generate_spec(m, d, [1, 2], 12, 3, g, eos_id=eos)
    assert r.tokens == ref.tokens[:ref.tokens.index(eos) + 1] and r.stop_reason == "eos"
    r = generate_spec(m, d, [1, 2], 7, 3, g)
    assert r.tokens == ref.tokens[:7]
    with pytest.raises(UserError, match="gamma"):
        generate_spec(m, d, [1, 2], 8, 0)
    with pytest.raises(UserError, match="context"):
        generate_spec(m, d, list(range(63)) * 2, 8, 4)
    with pytest.raises(UserError, match="context"):
        generate_plain(m, list(range(64)) * 2, 8)
    with pytest.raises(UserError, match="vocabulary"):
        generate_spec(m, tiny_model("llama", vocab_size=32), [1, 2], 4, 2)
    with pytest.raises(UserError, match="outside the vocabulary"):
        generate_plain(m, [1, 99], 4)
    with pytest.raises(UserError, match="temperature"):
        Sampling(-1.0)
    long = generate_plain(m, list(range(60)) * 2, 100, g)
    assert long.stop_reason == "context" and 120 + len(long.tokens) <= 128
