"""Exact output laws of decoding on tiny vocabularies, and the statistical test against
them (χ² with pooled small cells, and TV against its expected null value), and the tiny
model pairs those tests draft with. Shared by the speculative-decoding, token-tree and
POST tests."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from pspec_jax.models import forward, tiny_model


def exact_law(model, prompt, sampling, V, n=3):
    """P(first n emitted tokens = s) for every s in V^n, from full forwards."""
    seqs = np.array(list(itertools.product(range(V), repeat=n)), np.int32)  # (V^n, n)
    L = len(prompt)
    ids = jnp.concatenate([jnp.broadcast_to(jnp.asarray(prompt, jnp.int32), (len(seqs), L)),
                           jnp.asarray(seqs)], axis=1)
    logits = jax.jit(forward, static_argnums=0)(model.config, model.params, ids)[0]
    probs = np.asarray(sampling.probs(logits[:, L - 1:L - 1 + n]), np.float64)  # (V^n, n, V)
    law = np.prod(probs[np.arange(len(seqs))[:, None], np.arange(n)[None], seqs], axis=1)
    assert abs(law.sum() - 1) < 1e-4
    return law / law.sum()


def law_test(samples, law, V):
    """(χ² p-value, TV, TV threshold) of the empirical law of `samples` against `law`."""
    N = len(samples)
    idx = np.ravel_multi_index(samples.T, (V,) * samples.shape[1])
    emp = np.bincount(idx, minlength=law.size).astype(np.float64)
    exp = law * N
    if emp[law == 0].sum() > 0:  # outcomes the exact law forbids were observed
        return 0.0, 0.5 * np.abs(emp / N - law).sum(), _tv_threshold(law, N)
    big = exp >= 5  # pool small cells so the χ² approximation holds
    obs = np.append(emp[big], emp[~big].sum())
    ex = np.append(exp[big], exp[~big].sum())
    keep = ex > 0
    pval = stats.chisquare(obs[keep], ex[keep]).pvalue
    tv = 0.5 * np.abs(emp / N - law).sum()
    return pval, tv, _tv_threshold(law, N)


def _tv_threshold(law, N):
    # E|p̂ - p| ≈ sqrt(2p(1-p)/(πN)) per cell; allow 2.5× the expected null TV.
    return 2.5 * 0.5 * np.sum(np.sqrt(2 * law * (1 - law) / (np.pi * N)))


def law_pair(case, V):
    """(private, drafter) tiny models with vocabulary V for the law tests: "llama-vs-gpt2"
    (two unrelated models) or "truncated" (the drafter is the private model's first layer)."""
    if case == "llama-vs-gpt2":
        return (tiny_model("llama", seed=21, vocab_size=V, std=1.0),
                tiny_model("gpt2", seed=22, vocab_size=V, std=1.0, n_layers=1))
    p = tiny_model("llama", seed=25, vocab_size=V, std=1.0, n_layers=3)
    return p, p.truncated(1)
