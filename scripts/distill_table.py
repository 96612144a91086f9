"""α before/after distillation for each loss and data source (a markdown table).

Runs `pspec distill` in-process once per (loss, data) pair with the same student, token
budget and seed — the teacher is loaded once, the teacher/corpus pools and the held-out
evaluation set come from the on-disk cache after the first run — and prints a table of
the exact acceptance rate on the held-out prompts before and after, the expected tokens
per secure step for γ = 4 and 8, and the training throughput. Each run's drafter folder
goes under --out-root; `--md FILE` also writes the table (and the commands) to FILE.

    .venv/bin/python scripts/distill_table.py --tokens 20000 --losses tv fkl \\
        --data teacher onpolicy --student trunc8 --md scripts/distill_table.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pspec_jax import cli  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="trunc8")
    ap.add_argument("--losses", nargs="+", default=["tv", "fkl"], choices=["tv", "fkl", "rkl", "jsd"])
    ap.add_argument("--data", nargs="+", default=["teacher", "onpolicy"],
                    choices=["corpus", "teacher", "onpolicy"])
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-root", default="/tmp/pspec-distill-table",
                    help="one folder per run; rerunning over existing ones needs `-- --restart` "
                         "(start over) or `-- --resume` (pspec distill keeps their checkpoints)")
    ap.add_argument("--md", default=None, help="also write the table to this file")
    ap.add_argument("extra", nargs="*", help="more `pspec distill` options after --")
    a = ap.parse_args()
    rows = []
    for data in a.data:
        for loss in a.losses:
            out = Path(a.out_root) / f"{a.student}-{loss}-{data}-{a.tokens}"
            argv = ["distill", "--teacher", "DEFAULT", "--student", a.student, "--loss", loss,
                    "--data", data, "--tokens", str(a.tokens), "--seed", str(a.seed),
                    "--out", str(out), "--json", *a.extra]
            print("$ pspec " + " ".join(shlex.quote(x) for x in argv), file=sys.stderr, flush=True)
            buf = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                rc = cli.main(argv)
            if rc != 0:
                print(f"run failed with exit code {rc}", file=sys.stderr)
                return rc
            meta = json.loads(buf.getvalue().strip().splitlines()[-1])
            meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
            meta["argv"] = "pspec " + " ".join(shlex.quote(x) for x in argv if x != "--json")
            rows.append(meta)
            print(json.dumps(meta), file=sys.stderr, flush=True)
    head = ("| student | loss | data | tokens | α before | α after | tokens/step γ=4 | γ=8 | "
            "train tok/s | wall s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for m in rows:
        tps = m["tokens_per_step"] or {}
        lines.append(f"| {m['student']} | {m['loss']} | {m['data']} | {m['tokens']} | "
                     f"{m['acceptance_before']:.4f} | {m['acceptance_rate']:.4f} | "
                     f"{tps.get('4', float('nan')):.3f} | {tps.get('8', float('nan')):.3f} | "
                     f"{m['train_tokens_per_second']:.0f} | {m['wall_seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if a.md:
        cmds = "\n".join(f"    {m['argv']}" for m in rows)
        Path(a.md).write_text(f"# Distillation: α before/after (seed {a.seed})\n\n{table}\n\n"
                              f"Commands:\n\n{cmds}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
