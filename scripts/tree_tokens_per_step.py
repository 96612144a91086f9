#!/usr/bin/env python
"""Tokens per step of plain token-tree speculative decoding (`--mode spec --tree N`)
against the chain (γ = 4) on a tiny random pair, at temperature 1 and 0.

Mean emitted tokens per step (accepted + 1) over R independent runs (vmapped steps)
and S steps each, after the same prompt; a mechanism check, not a benchmark: the pair
is a random 4-layer model and its own first 3 layers (the default SmolLM2 pair is for
`pspec bench decode`). Minutes on 2 CPU cores; `--runs`, `--steps` change the size.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

import pspec_jax  # noqa: F401  (x64 flag)
from pspec_jax.decode import RecursiveRule, Sampling, SpeculativeRule, spec_step_fn, tree_step_fn
from pspec_jax.decode.spec import init_spec_state
from pspec_jax.decode.tree import ADAPTIVE_THRESHOLD, default_drafter, init_tree_state
from pspec_jax.models import tiny_model

PROMPT = [1, 2, 3, 4, 5]


def measure(private, drafter, sampling, runs, steps, gamma=None, n_nodes=None, adaptive=False):
    """(tokens per step, drafted nodes per step) averaged over runs × steps."""
    rows = 128
    if gamma is not None:
        s0 = init_spec_state(private, drafter, PROMPT, rows, 0)
        fn = functools.partial(spec_step_fn, private.config, drafter.config, sampling, gamma, SpeculativeRule())
    else:
        s0 = init_tree_state(private, drafter, PROMPT, rows, n_nodes, 0)
        fn = functools.partial(tree_step_fn, private.config, drafter.config, sampling, n_nodes,
                               default_drafter(sampling, adaptive), RecursiveRule())
    states = jax.vmap(lambda k: s0.replace(key=k))(jax.random.split(jax.random.PRNGKey(0), runs))
    step = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))
    acc, nodes = 0.0, 0.0
    for _ in range(steps):
        states, info = step(private.params, drafter.params, states)
        acc += float(jnp.mean(info.n_accepted))
        nodes += float(jnp.mean(info.n_nodes)) if gamma is None else gamma
    return 1 + acc / steps, nodes / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    private = tiny_model("llama", seed=34, n_layers=4, std=0.4, vocab_size=32, max_seq_len=256)
    drafter = private.truncated(3)
    print(f"tiny pair: llama 4 layers (V = 32) drafted by its first 3; {args.runs} runs × {args.steps} steps; "
          f"adaptive threshold {ADAPTIVE_THRESHOLD}")
    print("| temperature | drafts | tokens / step | nodes / step |")
    print("|---|---|---|---|")
    for sampling in (Sampling(1.0), Sampling(0.0)):
        t = sampling.temperature
        rows = [("chain γ=4", dict(gamma=4))]
        rows += [(f"tree N={n}", dict(n_nodes=n)) for n in (4, 8, 16)]
        rows += [("tree N=16 adaptive", dict(n_nodes=16, adaptive=True))]
        for name, kw in rows:
            tps, nodes = measure(private, drafter, sampling, args.runs, args.steps, **kw)
            print(f"| {t:g} | {name} | {tps:.2f} | {nodes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
