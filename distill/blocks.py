"""Which blocks a layer-skipping drafter keeps: greedy block dropping on training data.

Starting from all of the teacher's blocks, drop, one at a time, the block whose removal
keeps the highest acceptance proxy, down to `target` blocks (block 0 always stays). The
proxy is α = Σ min(p, q) against the teacher's cached top-k targets (+ min of the two rest
masses) on a few sequences of the TRAINING teacher pool — the held-out EVAL prompts are
never looked at, so the α that `pspec eval-acceptance` reports afterwards stays held out.

    .venv/bin/python -m distill.blocks --target 24 --rows 8

prints one line per drop and the preset name (`keep{blocks}`) of each size; the shipped
drafter's blocks came from this search (see scripts/distill_table.md).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from distill import data, losses
from distill.students import blocks_spec
from pspec_jax.models import arch

F32 = jnp.float32


def proxy_alpha(config, params, keep: list[int], batch: dict[str, np.ndarray]) -> float:
    """The acceptance proxy of the drafter made of blocks `keep` on one pool batch."""
    cfg, p = arch.keep_blocks(config, params, keep)
    return float(_proxy(cfg, p, jnp.asarray(batch["inputs"]), jnp.asarray(batch["idx"]),
                        jnp.asarray(batch["prob"], F32), jnp.asarray(batch["mask"], F32)))


@functools.partial(jax.jit, static_argnums=(0,))
def _proxy(config, params, inputs, idx, prob, mask):
    """α = 1 − TV on the target's support (top-k + rest bucket), masked mean."""
    logits, _ = arch.forward(config, params, inputs)
    return 1.0 - losses.distill_loss("tv", losses.Target(idx, prob), logits, mask)


def greedy_drop(config, params, batch: dict[str, np.ndarray], target: int,
                log: Callable[[str], None] = lambda s: None) -> list[tuple[list[int], float]]:
    """[(kept blocks, proxy α)] after each drop, from n_layers - 1 down to `target` blocks."""
    keep = list(range(config.n_layers))
    out: list[tuple[list[int], float]] = []
    while len(keep) > max(1, target):
        t = time.perf_counter()
        best: tuple[float, int] | None = None
        for j in keep[1:]:  # block 0 stays
            s = proxy_alpha(config, params, [x for x in keep if x != j], batch)
            if best is None or s > best[0]:
                best = (s, j)
        assert best is not None
        keep.remove(best[1])
        out.append((list(keep), best[0]))
        log(f"{len(keep)} blocks: drop {best[1]}, proxy α {best[0]:.4f}, keep{blocks_spec(tuple(keep))} "
            f"({time.perf_counter() - t:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    from distill.prompts import TRAIN, format_prompt
    from pspec_jax.models import load_default_private

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=int, default=24, help="blocks to keep")
    ap.add_argument("--rows", type=int, default=8, help="pool sequences in the proxy batch")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    pv = load_default_private()
    tok = pv.tokenizer
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    # round 0 of the default teacher pool (seq-len 128, 4 samples per prompt, seed 0): the
    # same cache `pspec distill --data teacher` makes and trains on
    pool = data.teacher_pool(pv.config, pv.params, [format_prompt(tok, p) for p in TRAIN],
                             seq_len=128, k=64, temperature=1.0, per_prompt=4, seed=0, rounds=1,
                             eos_id=tok.eos_token_id, log=log)
    rows = np.random.default_rng(a.seed).choice(len(pool), a.rows, replace=False)
    hist = greedy_drop(pv.config, pv.params, pool.batch(rows), a.target, log)
    for keep, s in hist:
        print(f"{len(keep)}\t{s:.4f}\tkeep{blocks_spec(tuple(keep))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
