#!/usr/bin/env python
"""The offline/online split against the unsplit programs, side by side in one process: two
SmolLM2 sessions from the same seed (the default private model, context 64), one
unsplit (`mpc.Context()`) and one split (`mpc.Context(split=True)`), passes alternating
between them so both see the same load; per T the median compute of the unsplit pass
and the split pass's offline and online parts (the simulation runs both parties: a
party's own share of the online work is about half), and whether the two sessions'
logits are bit-identical.

    python scripts/split_side_by_side.py [--comparison kogge-stone|dcf] [--tokens 1 8] [--repeats 3]
"""

import argparse
import dataclasses
import json
import statistics
import time

import jax.numpy as jnp
import numpy as np

import pspec_jax  # noqa: F401  (x64)
import mpc
from pspec_jax.models.default import load_default_private
from pspec_jax.secure import SecureSession
from pspec_jax.secure.ranges import calibrated_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", default="kogge-stone", choices=mpc.context.COMPARISONS)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bundle = load_default_private()
    base, _ = calibrated_config(bundle.config, bundle.params, bundle.tokenizer)
    config = dataclasses.replace(base, comparison=args.comparison)
    sessions = {split: SecureSession(bundle.config, bundle.params, max_len=80,
                                     ctx=mpc.Context(config, seed=b"side-by-side", split=split))
                for split in (False, True)}
    for T in args.tokens:
        ids = jnp.arange(T, dtype=jnp.int32) % bundle.config.vocab_size
        times = {False: [], True: []}
        phases = []
        logits = {}
        for i in range(args.repeats + 1):  # the first round compiles
            for split, sess in sessions.items():
                sess.rollback(0)
                sess.cache = sess.cache.rollback(64)
                before = dict(sess.ctx.phase_seconds)
                t0 = time.perf_counter()
                out = sess.forward(ids)
                seconds = time.perf_counter() - t0
                if i:
                    times[split].append(seconds)
                    if split:
                        phases.append([sess.ctx.phase_seconds[k] - before[k] for k in ("offline", "online")])
                else:
                    logits[split] = [np.asarray(out.share(p)) for p in (0, 1)]
        identical = all(np.array_equal(a, b) for a, b in zip(logits[False], logits[True]))
        print(json.dumps({"comparison": args.comparison, "T": T, "repeats": args.repeats,
                          "unsplit_s": round(statistics.median(times[False]), 3),
                          "split_total_s": round(statistics.median(times[True]), 3),
                          "offline_s": round(statistics.median(p[0] for p in phases), 3),
                          "online_s": round(statistics.median(p[1] for p in phases), 3),
                          "bit_identical_logits": identical}), flush=True)


if __name__ == "__main__":
    main()
