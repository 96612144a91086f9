"""Exact acceptance rate of a drafter on held-out prompts.

α(p, q) = Σ_x min(p(x), q(x)) = 1 − TV(p, q) is the probability that speculative
sampling accepts a draft drawn from q when the target is p (Leviathan et al. 2023,
Definition 3.1). We average it over the positions of the private model's OWN samples at
T = 1 on the held-out prompts (EVAL, chat template applied) — the contexts speculative
decoding meets — with both distributions as full rows (no top-k), so the number is exact
for those positions, not a Monte-Carlo count of accepted drafts. Expected tokens per
secure step with γ drafts and i.i.d. acceptance: (1 − α^(γ+1)) / (1 − α).

The evaluation set (teacher samples and the teacher's full rows at the evaluated
positions, stored as float16 probabilities) is made once and cached under
`$PSPEC_HOME/distill/eval-<key>/`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill import data
from pspec_jax.errors import UserError
from pspec_jax.models import arch

F32 = jnp.float32
GAMMAS = (4, 8)


@dataclasses.dataclass
class EvalSet:
    """tokens (N, L) int32 right-padded (causal: padding never changes earlier positions);
    start (N,) prompt lengths; n (N,) evaluated positions per row (the generated tokens up
    to and including the first EOS); p (M, V) float16 teacher rows, M = Σ n, row-major."""

    tokens: np.ndarray
    start: np.ndarray
    n: np.ndarray
    p: np.ndarray

    def positions(self) -> list[tuple[int, int]]:
        """(row, position) of every evaluated prediction, in the order of p."""
        return [(i, int(self.start[i]) - 1 + j) for i in range(len(self.n)) for j in range(int(self.n[i]))]


def tokens_per_step(alpha: float, gamma: int) -> float:
    """(1 − α^(γ+1)) / (1 − α): expected tokens per verification step (γ + 1 at α = 1)."""
    if alpha >= 1.0:
        return float(gamma + 1)
    return float((1.0 - alpha ** (gamma + 1)) / (1.0 - alpha))


@functools.partial(jax.jit, static_argnums=(0,))
def _probs(config, params, tokens):
    logits, _ = arch.forward(config, params, tokens)
    return jax.nn.softmax(logits.astype(F32), axis=-1)  # (B, L, V)


@jax.jit
def _alpha_rows(p: jax.Array, q: jax.Array) -> jax.Array:
    return jnp.sum(jnp.minimum(p.astype(F32), q), axis=-1)


def make_eval_set(config, params, prompt_ids: list[list[int]], *, new_tokens: int,
                  per_prompt: int, seed: int, eos_id: int | None, batch: int = 8) -> EvalSet:
    """Teacher samples at T = 1 on the prompts and the teacher's full rows along them."""
    seq_len = max(len(p) for p in prompt_ids) + new_tokens - 1
    pool = data.sample_pool(config, params, prompt_ids, per_prompt, seq_len,
                            jax.random.PRNGKey(seed), k=1, temperature=1.0, eos_id=eos_id)
    # sample_pool cut each sequence to seq_len + 1 tokens: prompts shorter than the longest
    # got more new tokens; keep exactly new_tokens positions per row.
    start = np.argmax(pool.mask, axis=1) + 1  # first trained position = T0 - 1
    n = np.minimum(pool.mask.sum(1), new_tokens).astype(np.int32)
    tokens = pool.tokens[:, :-1]
    rows = []
    for s in range(0, len(tokens), batch):
        pr = np.asarray(_probs(config, params, jnp.asarray(tokens[s:s + batch])))
        for i in range(pr.shape[0]):
            r = s + i
            rows.append(pr[i, start[r] - 1:start[r] - 1 + n[r]].astype(np.float16))
    return EvalSet(tokens.astype(np.int32), start.astype(np.int32), n, np.concatenate(rows))


def cached_eval_set(config, params, prompt_ids, *, new_tokens: int = 48, per_prompt: int = 1,
                    seed: int = 1234, eos_id: int | None = None, log=lambda s: None) -> EvalSet:
    key = hashlib.sha256(json.dumps([data.fingerprint(config, params), data.prompts_hash(prompt_ids),
                                     new_tokens, per_prompt, seed, eos_id]).encode()).hexdigest()[:12]
    d = data.cache_root() / f"eval-{key}"
    f = d / "eval.npz"
    if f.exists():
        try:
            with np.load(f) as z:
                return EvalSet(z["tokens"], z["start"], z["n"], z["p"])
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"corrupt evaluation cache {f}: {err}") from None
    log(f"making the held-out evaluation set ({len(prompt_ids)} prompts × {per_prompt} "
        f"teacher samples of {new_tokens} tokens; cached in {d})")
    es = make_eval_set(config, params, prompt_ids, new_tokens=new_tokens, per_prompt=per_prompt,
                       seed=seed, eos_id=eos_id)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "eval.tmp.npz"
    np.savez(tmp, tokens=es.tokens, start=es.start, n=es.n, p=es.p)
    os.replace(tmp, f)
    return es


def acceptance(es: EvalSet, config, params, *, batch: int = 8) -> dict[str, Any]:
    """The drafter's exact α on the evaluation set.

    Returns:
      {"acceptance_rate": mean α over positions, "alpha_per_prompt": [...],
       "positions": M, "tokens_per_step": {"4": ..., "8": ...}}.
    """
    if es.p.shape[1] != config.vocab_size:
        raise UserError(f"the drafter's vocabulary ({config.vocab_size}) differs from the private "
                        f"model's ({es.p.shape[1]})")
    alphas = []
    off = 0
    for s in range(0, len(es.tokens), batch):
        q = _probs(config, params, jnp.asarray(es.tokens[s:s + batch]))  # (b, L, V)
        for i in range(q.shape[0]):
            r = s + i
            a, m = int(es.start[r]) - 1, int(es.n[r])
            alphas.append(np.asarray(_alpha_rows(jnp.asarray(es.p[off:off + m]), q[i, a:a + m])))
            off += m
    per_pos = np.concatenate(alphas)
    alpha = float(per_pos.mean())
    return {"acceptance_rate": alpha,
            "alpha_per_prompt": [float(x.mean()) for x in alphas],
            "positions": int(per_pos.size),
            "tokens_per_step": {str(g): tokens_per_step(alpha, g) for g in GAMMAS}}
