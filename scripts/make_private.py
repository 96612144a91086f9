"""Trains the default private model (distill/private.py) and writes what the repository ships.

    python scripts/make_private.py [--steps 120] [--out distill/private/pydoc]

The fine-tune: the public base (SmolLM2-135M-Instruct) + LoRA rank 8 on every linear of
every block + norm scales, cross-entropy on the Python reference's topics as chat answers
(`distill.private`), AdamW (the distillation trainer's optimizer and schedule), batch 8 x
128, seed 0. Checkpoints (Orbax) in OUT/ckpt: a run stopped by --time-limit continues where
it left off. Writes OUT/trained.safetensors (the trained leaves, float16) and OUT/recipe.json
(the recipe and the held-out loss of the base and of the fine-tune).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pspec_jax  # noqa: F401  (x64 flag before jax use)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="default: distill/private/pydoc (what is shipped)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=0.0, help="minutes (0: none)")
    args = ap.parse_args()

    import numpy as np

    from distill import private, students, train
    from distill.export import save_trained
    from pspec_jax.models import load_default_base

    out = Path(args.out) if args.out else private.SHIPPED
    base = load_default_base()
    cfg, params, tok = base
    student = students.build_student(private.PRESET, cfg, params, seed=args.seed)
    pool = private.pool(tok, "train", 128)
    tc = train.TrainConfig(loss="fkl", lr=args.lr, warmup=10, steps=args.steps, batch=8,
                           seed=args.seed, checkpoint_every=10)
    private.log(f"{private.PRESET}: {students.count(student.split()[0]):,} trained params; "
                f"{len(pool)} answers, {pool.trained_positions:,} answer tokens; {args.steps} steps")
    t0 = time.time()
    result = train.train(student, pool, tc, ckpt_dir=out / "ckpt", resume=True, log=private.log,
                         deadline=t0 + 60 * args.time_limit if args.time_limit > 0 else None)
    if result.steps and result.steps < args.steps and not (out / "ckpt").exists():
        return 1
    trained = student.split(result.params)[0]
    save_trained(out / private.DELTA, trained, np.float16, {"preset": private.PRESET})
    recipe = {
        "what": "SmolLM2-135M-Instruct + LoRA r8 on every linear of every block + norm scales, "
                "fine-tuned on the Python Language Reference (pydoc_data.topics) as chat answers",
        "command": "python scripts/make_private.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "preset": private.PRESET, "loss": "fkl (cross-entropy on answer tokens)",
        "data": {"source": "pydoc_data.topics", "python": platform.python_version(),
                 "held_out_every": private.HELD_OUT_EVERY, "answer_tokens": private.ANSWER_TOKENS,
                 "train_answers": len(pool), "train_answer_tokens": pool.trained_positions},
        "steps": args.steps, "batch": tc.batch, "seq_len": 128, "lr": args.lr, "seed": args.seed,
        "delta_dtype": "float16", "train_seconds_this_run": round(result.seconds, 1),
        "train_tokens_per_second": round(result.tokens_per_second, 1),
        "final_loss": result.losses[-1] if result.losses else None,
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    private.log(f"wrote {out / private.DELTA} and {out / 'recipe.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
