"""POST: public drafting, private verification (the mission's decode loop).

Each step:
  1. The client drafts γ tokens with the public model, in the clear on its own machine,
     keeping their distributions q (`spec.draft_tokens`), and draws r_i ~ U[0, 1).
  2. One secure pass of the private model over the last accepted token plus the γ drafts
     appends γ+1 rows to the shared KV cache (`SecureSession.forward`).
  3. The private rejection protocol (`mpc.protocols.rejection`) accepts a prefix of n
     drafts and yields the next token: `--privacy paper` opens row n of p to the client,
     which samples norm(max(0, p_n − q_n)) itself; `--privacy strict` samples it inside MPC
     and opens only the id. Greedy (temperature 0): x_i is accepted iff it is the private
     argmax, and the next token is the argmax of row n.
  4. Both caches roll back to the accepted prefix (the server learns n this way).

Token trees (`tree=N`): step 1 fills the public static shape for N
(`pspec_jax.decode.tree.static_shape`) with drafts, step 2's pass runs over the root and
the tree's slots with the tree mask, step 3 is the private walk over siblings
(`mpc.protocols.rejection.tree_verify`, which opens the accepted path to both), and step
4 keeps the path's rows in both caches (`keep_path`) instead of rolling back.

The emitted tokens follow the private model's law exactly (up to the fixed-point error of
p); tests check it statistically against the exact law. The secure pass over γ+1 tokens
costs little more than over one, so each accepted draft saves most of a pass.

Cache invariants as in `spec.py`: the secure cache holds tokens[:length−1] (the last
token is fed by the next verification); the drafter cache tokens[:length−1] or
tokens[:length−2].
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import mpc
from mpc.protocols.rejection import PRIVACY_MODES
from pspec_jax.decode.accept import residual
from pspec_jax.decode.common import (GenerationResult, OnTokens, check_gamma, check_ids, check_tree, prefill,
                                     run_steps, token_buffer)
from pspec_jax.decode.costs import CostReport
from pspec_jax.decode.sampling import Sampling, client_key, sample, secret_uniform, step_key
from pspec_jax.decode.secure import check_secure_sampling, check_temperature, ledger_slice
from pspec_jax.decode.spec import check_pair, draft_tokens
from pspec_jax.decode.tree import draft_tree
from pspec_jax.errors import UserError

RULES = ("exact", "always_accept")  # always_accept: NEGATIVE CONTROL for tests only

draft_program = jax.jit(draft_tokens, static_argnums=(0, 1, 2))
draft_tree_program = jax.jit(draft_tree, static_argnums=(0, 1, 2, 3))


def tree_width(n_nodes: int, budget: int) -> int:
    """The rows of a tree step's secure pass: the root and n_nodes drafted nodes, rounded
    up to 2^k + 1 (at most budget + 1), so an adaptive run compiles a few pass widths,
    not one per node count. The padding slots are never on the path."""
    width = 2
    while width < n_nodes + 1:
        width = 2 * width - 1
    return min(width, budget + 1)


def tried_laws(tree) -> jax.Array:
    """(M, V) the law each slot's token was drawn from given its earlier siblings (the
    client's input to the walk): q of the parent without the earlier siblings,
    renormalised ("sample"), or δ of the token ("top"); zero rows for the root and
    padding."""
    M, V = tree.q.shape
    idx = jnp.arange(M)
    valid = (idx >= 1) & (idx <= tree.n_nodes)
    one_hot = jax.nn.one_hot(tree.tokens, V, dtype=jnp.float32) * valid[:, None]
    if tree.kind == "top":
        return one_hot
    earlier = (tree.parent[None, :] == tree.parent[:, None]) & (idx[None, :] < idx[:, None]) & valid[None, :]
    taken = earlier.astype(jnp.float32) @ one_hot  # (M, V): tokens of earlier siblings
    q = jnp.where(taken > 0, 0.0, tree.q[jnp.maximum(tree.parent, 0)]) * valid[:, None]
    return q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-30)


@dataclasses.dataclass
class StepCosts:
    """Wall-clock seconds of one part of the decode loop, summed over steps."""

    draft_s: float = 0.0  # client: drafting in the clear
    forward_s: float = 0.0  # secure pass of the private model
    verify_s: float = 0.0  # rejection protocol and next token


def generate_post(private, drafter, prompt_ids: list[int], max_new_tokens: int = 32,
                  gamma: int = 4, sampling: Sampling = Sampling(), privacy: str = "strict",
                  eos_id: int | None = None, on_tokens: OnTokens | None = None,
                  seed: int | None = None, mpc_config: mpc.MPCConfig | None = None,
                  dealer_seed: bytes | None = None, session=None,
                  rule: str = "exact", tree: int | None = None, adaptive: bool = False,
                  tree_drafter=None) -> GenerationResult:
    """POST decoding of `private` with the public `drafter` (ModelBundles).

    `tree` = N: each step drafts a token tree of up to N nodes in the public static shape
    for N (`pspec_jax.decode.tree`) instead of a chain of γ, verifies all of them in one
    secure pass with the tree mask and walks them privately (`tree_verify`); `adaptive`
    stops drafting early on the drafter's confidence (the server learns the node count);
    `tree_drafter` overrides the drafting strategy (its shape must be static).

    `seed` fixes the client's drafting and acceptance randomness, for tests and
    reproductions only: a seeded run is not private (whoever knows the seed predicts every
    threshold r_i). None (the default): the thresholds come straight from os.urandom and
    the drafter's sampling from a threefry key of 64 os.urandom bits. `dealer_seed` fixes
    the masks (tests only; never in a real run); strict mode's sampling randomness comes
    from both parties inside MPC. `session`: an existing
    SecureSession of the private model to reuse (reset here; saves compilation).
    `rule="always_accept"` is a NEGATIVE CONTROL for tests: the client sends thresholds 0,
    so every draft with p > 0 passes and the output follows the drafter — it must fail
    the exactness tests.
    Returns a GenerationResult whose `extra` holds the cost figures (prefill, decode and
    total; forward vs verification) like `generate_secure`'s, plus γ and the privacy mode.
    """
    from pspec_jax.secure import SecureSession

    if tree is None:
        check_gamma(gamma, post=True)
    else:
        from pspec_jax.decode.tree import default_drafter

        gamma = check_tree(tree)  # the rows a step appends beyond the root, as γ does
        tree_drafter = tree_drafter or default_drafter(sampling, adaptive, n_nodes=tree)
        if tree_drafter.shape is None:
            raise UserError("POST verifies token trees of a static shape only (the server must not "
                            "learn a data-dependent shape)")
    check_privacy(privacy)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    check_secure_sampling(sampling)
    check_pair(private, drafter)
    prompt_ids = check_ids(prompt_ids, private.config)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ctx_len = min(private.config.max_seq_len, drafter.config.max_seq_len)
    if len(prompt_ids) + gamma + 1 > ctx_len:
        raise UserError(f"the prompt has {len(prompt_ids)} tokens; with γ = {gamma} drafts it does "
                        f"not fit the context of {ctx_len}")
    max_new = min(max_new_tokens, ctx_len - len(prompt_ids) - gamma)
    rows = len(prompt_ids) + max_new + gamma + 1  # a step may append γ+1 rows past the output
    if session is None:
        session = SecureSession(private.config, private.params, max_len=rows,
                                mpc_config=mpc_config, seed=dealer_seed,
                                tokenizer=private.tokenizer)
    elif session.max_len < rows:
        raise UserError(f"the session's cache holds {session.max_len} tokens, the run needs {rows}")
    check_temperature(session, sampling)
    key = client_key(seed)
    V = private.config.vocab_size
    session.rollback(0)
    ledger = session.ledger
    setup_mark = ledger.snapshot()

    # Prefill: all prompt tokens but the last enter the caches (the first step feeds it).
    t0 = time.perf_counter()
    if len(prompt_ids) > 1:
        with ledger.scope("prefill"):
            session.forward(prompt_ids[:-1], with_logits=False)
    cache_d = prefill(drafter.config, drafter.params, prompt_ids[:-1], rows)
    tokens = token_buffer(prompt_ids, rows + gamma + 3)
    prefill_compute = time.perf_counter() - t0
    decode_mark = ledger.snapshot()

    costs = StepCosts()
    nodes: list[int] = []  # tree runs: nodes drafted per step

    def tree_step(state: tuple) -> tuple[tuple, int, list[int]]:
        cache_d, tokens, length, i = state
        k_draft, k_r, k_y = jax.random.split(step_key(key, jnp.int32(i)), 3)
        # 1. the client drafts a tree in the public static shape, in the clear.
        ts = time.perf_counter()
        drafted, cache_d = draft_tree_program(drafter.config, sampling, gamma, tree_drafter, drafter.params,
                                              cache_d, tokens, jnp.int32(length), k_draft)
        n_nodes = int(drafted.n_nodes)
        nodes.append(n_nodes)
        width = tree_width(n_nodes, gamma)  # the pass's rows: the server sees this and n_nodes
        parents = tree_drafter.shape[:width - 1]
        slots = np.asarray(drafted.tokens)[:width]
        q_try = np.asarray(tried_laws(drafted), np.float64)[:width]
        u = secret_uniform(width) if seed is None else np.asarray(jax.random.uniform(k_r, (width,), jnp.float64))
        thresholds = u * q_try[np.arange(width), slots] if rule == "exact" else np.zeros(width)
        costs.draft_s += time.perf_counter() - ts
        # 2. one secure pass over the root and the tree's slots (the tree mask is public).
        ts = time.perf_counter()
        with ledger.scope("forward"):
            logits = session.forward(slots, tree=(parents, n_nodes))
        costs.forward_s += time.perf_counter() - ts
        # 3. the private walk: the accepted path (both learn it) and the next token.
        ts = time.perf_counter()
        path, result = session.verify_tree(logits, n_nodes, slots, thresholds, q_try, parents,
                                           float(sampling.temperature), privacy)
        if privacy == "paper" and not sampling.greedy:  # the client applies the last node's rejections
            last = path[-1] if path else 0
            r = jnp.clip(jnp.asarray(result, jnp.float32), 0.0, None)
            r = r / jnp.sum(r)
            for c in range(1, n_nodes + 1):
                if parents[c - 1] == last:
                    r = residual(r, jnp.asarray(q_try[c], jnp.float32))
            y = int(sample(k_y, r))
        else:
            y = int(result)
        costs.verify_s += time.perf_counter() - ts
        # 4. both caches keep the accepted path's rows behind the root.
        ts = time.perf_counter()
        new = [int(slots[c]) for c in path] + [y]
        n = len(path)
        tokens = tokens.at[0, length:length + n + 1].set(jnp.asarray(new, jnp.int32))
        session.keep_path(length, path)
        src = jnp.asarray([length - 1 + c for c in path] + [0] * (gamma - n), jnp.int32)
        cache_d = cache_d.keep_path(length, src, n)
        length += n + 1
        costs.draft_s += time.perf_counter() - ts
        return (cache_d, tokens, length, i + 1), n, new

    def step(state: tuple) -> tuple[tuple, int, list[int]]:
        cache_d, tokens, length, i = state  # drafter cache, ids so far, their count, step
        k_draft, k_r, k_y = jax.random.split(step_key(key, jnp.int32(i)), 3)
        # 1. the client drafts in the clear.
        ts = time.perf_counter()
        drafts, q, cache_d = draft_program(drafter.config, sampling, gamma, drafter.params, cache_d,
                                           tokens, jnp.int32(length), k_draft)
        drafts = np.asarray(drafts)
        q_x = np.asarray(q)[np.arange(gamma), drafts].astype(np.float64)
        r = secret_uniform(gamma) if seed is None else np.asarray(jax.random.uniform(k_r, (gamma,), jnp.float64))
        thresholds = r * q_x if rule == "exact" else np.zeros(gamma)
        q_rows = jnp.concatenate([q, jnp.zeros((1, V), q.dtype)])  # row γ = 0: the bonus row
        costs.draft_s += time.perf_counter() - ts
        # 2. one secure pass over the last token and the γ drafts.
        ts = time.perf_counter()
        chunk = [int(tokens[0, length - 1])] + drafts.tolist()
        with ledger.scope("forward"):
            logits = session.forward(chunk)
        costs.forward_s += time.perf_counter() - ts
        # 3. private rejection and the next token.
        ts = time.perf_counter()
        n, result = session.verify(logits, drafts, thresholds, q_rows, float(sampling.temperature), privacy)
        n = int(n)
        if privacy == "paper" and not sampling.greedy:  # the client samples the opened row
            p_n = jnp.clip(jnp.asarray(result, jnp.float32), 0.0, None)
            y = int(sample(k_y, residual(p_n / jnp.sum(p_n), q_rows[n])))
        else:
            y = int(result)
        costs.verify_s += time.perf_counter() - ts
        # 4. both caches roll back to the accepted prefix.
        ts = time.perf_counter()
        new = drafts[:n].tolist() + [y]
        tokens = tokens.at[0, length:length + n + 1].set(jnp.asarray(new, jnp.int32))
        length += n + 1
        session.rollback(length - 1)
        cache_d = cache_d.rollback(jnp.minimum(cache_d.length, length - 1))
        costs.draft_s += time.perf_counter() - ts
        return (cache_d, tokens, length, i + 1), n, new

    run = run_steps(step if tree is None else tree_step, (cache_d, tokens, len(prompt_ids), 0), max_new,
                    max_new_tokens, eos_id, on_tokens)

    decode_compute = costs.draft_s + costs.forward_s + costs.verify_s
    steps = run.steps
    prefill_rep = CostReport.of(ledger_slice(ledger, setup_mark, decode_mark), prefill_compute, 1 if len(prompt_ids) > 1 else 0)
    decode_rep = CostReport.of(ledger.since(decode_mark), decode_compute, steps)
    total = CostReport.of(ledger.since(setup_mark), prefill_compute + decode_compute, prefill_rep.secure_passes + steps)
    decode_ledger = ledger.since(decode_mark)
    verify_rep = CostReport.of(_scoped(decode_ledger, "verify"), costs.verify_s, steps)
    forward_rep = CostReport.of(_scoped(decode_ledger, "forward"), costs.forward_s, steps)
    extra: dict[str, Any] = {
        **total.to_json(tokens=len(run.tokens)), "prefill": prefill_rep.to_json(),
        "decode": decode_rep.to_json(tokens=max(1, len(run.tokens))),
        "setup": {"bytes_server": ledger.totals("setup").bytes1, "seconds": round(session.setup_s, 3)},
        "compile_seconds": round(session.ctx.compile_seconds, 3),  # this process's programs
        "privacy": privacy, **({"gamma": gamma} if tree is None else
                               {"tree": tree, "adaptive": tree_drafter.threshold > 0, "tree_kind": tree_drafter.kind,
                                "nodes_per_step": nodes}),
        "draft_s": round(costs.draft_s, 4),
        "forward": forward_rep.to_json(), "verify": verify_rep.to_json(),
        # The rejection protocol's share of the decode steps' modelled time, per preset.
        "verify_share": {k: round(verify_rep.modeled_s[k] / decode_rep.modeled_s[k], 4)
                         for k in decode_rep.modeled_s if decode_rep.modeled_s[k] > 0},
    }
    res = run.result("post", drafted=gamma * steps if tree is None else sum(nodes), prefill_seconds=prefill_compute,
                     extra=extra)
    res.extra["_ledger"] = ledger  # removed by the CLI before printing
    res.extra["_ranges"] = session.calibration()  # shown by --profile (removed by the CLI)
    return res


def _scoped(ledger: mpc.Ledger, label: str) -> mpc.Ledger:
    """The entries of `ledger` recorded under the top-level scope `label`."""
    sub = mpc.Ledger()
    sub.entries = [e for e in ledger.entries if e.op.split("/")[0] == label]
    return sub


def check_privacy(privacy: str) -> str:
    """The one check of a POST privacy mode (strict or paper); returns it."""
    if privacy not in PRIVACY_MODES:
        raise UserError(f"unknown privacy mode {privacy!r} (choose from {', '.join(PRIVACY_MODES)})")
    return privacy
