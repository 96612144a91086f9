"""The default private model's must-holds, measured: it differs from the public base, and it
is fluent in its domain.

    python scripts/private_check.py [--tokens 16] [--json]

Prints, for the 24 held-out prompts (`distill.prompts.EVAL`, chat template), the first
position where the fine-tune's greedy continuation leaves the base's (within --tokens), the
fraction that differ, the mean cross-entropy of both on the held-out topics of the Python
reference (`distill.private.split_topics("held_out")`, never trained on) and on as many
answers of the training topics, and a few greedy samples of both.
"""

from __future__ import annotations

import argparse
import json
import time

import pspec_jax  # noqa: F401  (x64 flag before jax use)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--samples", type=int, default=3, help="prompts whose continuations are printed")
    ap.add_argument("--sample-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from distill import private
    from distill.prompts import EVAL
    from pspec_jax.models import load_default_base, load_default_private

    t0 = time.time()
    base, tuned = load_default_base(), load_default_private()
    rows = private.greedy_divergence(tuned, base, list(EVAL), args.tokens)
    differ = sum(r["first_difference"] is not None for r in rows)
    n_held = len(private.pool(base.tokenizer, "held_out", 128))  # the same count of training answers
    loss = {m.name: {s: private.domain_loss(m.config, m.params, m.tokenizer, s, limit=n_held)
                     for s in ("held_out", "train")} for m in (base, tuned)}
    picks = [EVAL[i] for i in range(0, len(EVAL), max(1, len(EVAL) // max(1, args.samples)))][:args.samples]
    samples = private.greedy_divergence(tuned, base, picks, args.sample_tokens,
                                        eos_id=base.tokenizer.eos_token_id) if args.samples else []
    out = {"prompts": len(rows), "differ_within": args.tokens, "differ": differ,
           "differ_fraction": differ / len(rows), "loss_nats_per_token": loss,
           "rows": rows, "samples": samples, "seconds": round(time.time() - t0, 1)}
    if args.json:
        print(json.dumps(out))
        return 0
    for r in rows:
        print(f"{str(r['first_difference']):>5}  {r['prompt']}")
    print(f"greedy output differs from the base's within {args.tokens} tokens on {differ}/{len(rows)} "
          f"held-out prompts ({differ / len(rows):.0%})")
    for name, v in loss.items():
        print(f"{name}: cross-entropy on held-out topics {v['held_out']:.3f}, on training topics "
              f"{v['train']:.3f} nats/token")
    for s in samples:
        print(f"\n### {s['prompt']}\n--- private ({tuned.name}):\n{s['private']}\n--- base:\n{s['base']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
