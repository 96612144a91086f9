#!/usr/bin/env python
"""Per-sibling-rank acceptance rates a_j of the token-tree walk on the default pair
(the measurement behind `pspec_jax.decode.tree.SIBLING_RATES`).

a_j = the chance that the recursive rejection walk accepts the j-th child it tries at a
node, given it reached the node and rejected the j − 1 siblings before it. Counted with
the dynamic best-first drafter (`TreeState.tries` / `accepts`, N nodes per step) on the
default private model (the SmolLM2 fine-tune) and the distilled drafter, over held-out
prompts (`distill.prompts.EVAL`, every third: all four kinds), at temperature 1
("sample" trees) and 0 ("top" trees). Minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import numpy as np

import pspec_jax  # noqa: F401  (x64 flag)
from distill.export import default_drafter
from distill.prompts import EVAL, format_prompt
from pspec_jax.decode import Sampling, tree_step
from pspec_jax.decode.tree import RecursiveRule, TreeDrafter, init_tree_state
from pspec_jax.models.default import load_default_private


def count(private, drafter, prompts, sampling, n_nodes, new_tokens):
    """(tries (N,), accepts (N,), steps) summed over the prompts, one run each."""
    strategy = TreeDrafter("top" if sampling.greedy else "sample")
    rows = 128 * -(-(max(map(len, prompts)) + new_tokens + n_nodes + 2) // 128)  # one compiled shape
    tries, accepts, steps = np.zeros(n_nodes), np.zeros(n_nodes), 0
    for seed, ids in enumerate(prompts):
        state = init_tree_state(private, drafter, ids, rows, n_nodes, seed)
        while int(state.length) < len(ids) + new_tokens:
            state, _ = tree_step(private.config, drafter.config, sampling, n_nodes, strategy,
                                 RecursiveRule(), private.params, drafter.params, state)
            steps += 1
        tries += np.asarray(state.tries)
        accepts += np.asarray(state.accepts)
    return tries, accepts, steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens per prompt")
    ap.add_argument("--prompts", type=int, default=8)
    args = ap.parse_args()
    private, drafter = load_default_private(), default_drafter(quiet=True)
    texts = EVAL[::3][: args.prompts]
    prompts = [format_prompt(private.tokenizer, t) for t in texts]
    print(f"{private.name} drafted by {drafter.name}; dynamic trees of N = {args.nodes}; "
          f"{len(prompts)} held-out prompts × {args.new_tokens} tokens")
    for sampling in (Sampling(1.0), Sampling(0.0)):
        tries, accepts, steps = count(private, drafter, prompts, sampling, args.nodes, args.new_tokens)
        kind = "top" if sampling.greedy else "sample"
        print(f"\ntemperature {sampling.temperature:g} ({kind}), {steps} steps")
        print("| sibling rank j | tries | accepts | a_j |")
        print("|---|---|---|---|")
        for j in np.flatnonzero(tries):
            print(f"| {j + 1} | {tries[j]:.0f} | {accepts[j]:.0f} | {accepts[j] / tries[j]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
