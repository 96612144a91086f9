#!/usr/bin/env python
"""Tokens per step of plain token-tree speculative decoding (`--mode spec --tree N`):
chains, static trees (the default: `static_shape(N)`, public topology) and dynamic
best-first trees, at temperature 1 and 0.

`--pair tiny` (default): a mechanism check, not a benchmark: a random 4-layer llama
(V = 32) drafted by its own first 3 layers, R independent runs (vmapped steps) × S steps
after one prompt. Minutes on 2 CPU cores; `--runs`, `--steps` change the size. The
static shapes are grown with the rates measured on the default pair, not this one.
`--pair default`: the default pair (the SmolLM2 fine-tune drafted by the distilled
drafter) on 8 held-out prompts (`distill.prompts.EVAL`, every third) × 32 new tokens,
one run each; tokens per step = emitted tokens / steps over all prompts. Tens of
minutes on 2 CPU cores (one compilation per row and temperature).
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

TINY_PROMPT = [1, 2, 3, 4, 5]


def step_fn(private, drafter, sampling, gamma=None, n_nodes=None, adaptive=False, static=True):
    """(pure step, its initial state for a prompt, drafts a step can hold)."""
    if gamma is not None:
        fn = functools.partial(spec_step_fn, private.config, drafter.config, sampling, gamma, SpeculativeRule())
        return fn, lambda ids, rows, seed: init_spec_state(private, drafter, ids, rows, seed), gamma
    strategy = default_drafter(sampling, adaptive, n_nodes=n_nodes if static else None)
    fn = functools.partial(tree_step_fn, private.config, drafter.config, sampling, n_nodes, strategy,
                           RecursiveRule())
    return fn, lambda ids, rows, seed: init_tree_state(private, drafter, ids, rows, n_nodes, seed), n_nodes


def measure_tiny(private, drafter, sampling, runs, steps, **kw):
    """(tokens per step, drafted nodes per step) averaged over runs × steps."""
    fn, init, budget = step_fn(private, drafter, sampling, **kw)
    s0 = init(TINY_PROMPT, 128, 0)
    states = jax.vmap(lambda k: s0.replace(key=k))(jax.random.split(jax.random.PRNGKey(0), runs))
    step = jax.jit(jax.vmap(fn, in_axes=(None, None, 0)))
    acc, nodes = 0.0, 0.0
    for _ in range(steps):
        states, info = step(private.params, drafter.params, states)
        acc += float(jnp.mean(info.n_accepted))
        nodes += float(jnp.mean(info.n_nodes)) if hasattr(info, "n_nodes") else budget
    return 1 + acc / steps, nodes / steps


def measure_prompts(private, drafter, sampling, prompts, new_tokens, **kw):
    """(tokens per step, drafted nodes per step) over one run per prompt."""
    fn, init, budget = step_fn(private, drafter, sampling, **kw)
    step = jax.jit(fn)
    rows = 128 * -(-(max(map(len, prompts)) + new_tokens + 40) // 128)  # one compiled shape
    emitted, steps, nodes = 0, 0, 0.0
    for seed, ids in enumerate(prompts):
        state = init(ids, rows, seed)
        while int(state.length) < len(ids) + new_tokens:
            state, info = step(private.params, drafter.params, state)
            steps += 1
            nodes += float(info.n_nodes) if hasattr(info, "n_nodes") else budget
        emitted += int(state.length) - len(ids)
    return emitted / steps, nodes / steps


def tiny_table(args) -> None:
    from pspec_jax.models import tiny_model

    private = tiny_model("llama", seed=34, n_layers=4, std=0.4, vocab_size=32, max_seq_len=256)
    drafter = private.truncated(3)
    print(f"tiny pair: llama 4 layers (V = 32) drafted by its first 3; {args.runs} runs × {args.steps} steps; "
          f"adaptive threshold {ADAPTIVE_THRESHOLD}; tokens / step (nodes drafted / step)")
    print("| temperature | drafts | static tree | dynamic tree |")
    print("|---|---|---|---|")
    for sampling in (Sampling(1.0), Sampling(0.0)):
        t = sampling.temperature
        tps, _ = measure_tiny(private, drafter, sampling, args.runs, args.steps, gamma=4)
        print(f"| {t:g} | chain γ=4 | {tps:.2f} (4) | |", flush=True)
        for name, kw in [(f"N={n}", dict(n_nodes=n)) for n in (4, 8, 16)] + [
                ("N=16 adaptive", dict(n_nodes=16, adaptive=True))]:
            cells = [measure_tiny(private, drafter, sampling, args.runs, args.steps, static=static, **kw)
                     for static in (True, False)]
            print(f"| {t:g} | {name} | " + " | ".join(f"{a:.2f} ({b:.1f})" for a, b in cells) + " |", flush=True)


def default_table(args) -> None:
    from distill.export import default_drafter as distilled
    from distill.prompts import EVAL, format_prompt
    from pspec_jax.models.default import load_default_private

    private, drafter = load_default_private(), distilled(quiet=True)
    prompts = [format_prompt(private.tokenizer, t) for t in EVAL[::3][:8]]
    print(f"{private.name} drafted by {drafter.name}; {len(prompts)} held-out prompts × {args.new_tokens} "
          f"new tokens; adaptive threshold {ADAPTIVE_THRESHOLD}; tokens / step (nodes drafted / step)")
    rows = [("chain γ=4", dict(gamma=4)), ("chain γ=8", dict(gamma=8))]
    rows += [(f"static N={n}", dict(n_nodes=n)) for n in (8, 16, 32)]
    rows += [("static N=16 adaptive", dict(n_nodes=16, adaptive=True)),
             ("dynamic N=16", dict(n_nodes=16, static=False))]
    rows = [(name, kw) for name, kw in rows if args.only in name]
    print("| drafts | T = 1 | T = 0 |")
    print("|---|---|---|")
    for name, kw in rows:
        cells = [measure_prompts(private, drafter, s, prompts, args.new_tokens, **kw)
                 for s in (Sampling(1.0), Sampling(0.0))]
        print(f"| {name} | " + " | ".join(f"{a:.2f} ({b:.1f})" for a, b in cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=("tiny", "default"), default="tiny")
    ap.add_argument("--runs", type=int, default=256, help="tiny pair: vmapped runs")
    ap.add_argument("--steps", type=int, default=12, help="tiny pair: steps per run")
    ap.add_argument("--new-tokens", type=int, default=32, help="default pair: tokens per prompt")
    ap.add_argument("--only", default="", help="default pair: only the rows whose name contains this")
    args = ap.parse_args()
    (default_table if args.pair == "default" else tiny_table)(args)


if __name__ == "__main__":
    main()
