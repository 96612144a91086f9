"""`pspec eval-acceptance`: a drafter's exact acceptance rate α on held-out prompts.

α = mean over positions of Σ_x min(p(x), q(x)) along the private model's own samples at
T = 1 on the held-out prompts (chat template), and the expected tokens per secure step
(1 − α^(γ+1)) / (1 − α) for γ ∈ {4, 8}. Without --public it evaluates the drafter the demo
uses and its two baselines: the public base as drafter (no distillation), the
base-derived drafter before distillation, and after (`distill.export.default_drafter_stages`).
"""

from __future__ import annotations

import argparse
import json
import sys

from pspec_jax.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--public", default=None,
                   help="the drafter: a model folder/GGUF, or trunc{k} for the first k layers "
                        "of the private model (default: the demo's drafter)")
    p.add_argument("--private", default="DEFAULT",
                   help="DEFAULT (the fine-tune), base (the public base) or a model folder/GGUF")
    p.add_argument("--new-tokens", type=int, default=48, help="sampled tokens per prompt")
    p.add_argument("--seed", type=int, default=1234, help="seed of the private model's samples")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (acceptance_rate, tokens_per_step, ...)")


def run(args: argparse.Namespace) -> int:
    import re

    from distill import evaluate, export
    from distill.prompts import EVAL, format_prompt
    from pspec_jax.models import check_same_tokenizer, load_model
    from pspec_jax.models.default import resolve_private

    if args.new_tokens < 1:
        raise UserError(f"--new-tokens must be >= 1, got {args.new_tokens}")
    private = resolve_private(args.private)
    if private.tokenizer is None:
        raise UserError("the private model has no tokenizer (needed for the prompts)")
    if args.public is None:  # the shipped drafter with its two baselines
        drafters = export.default_drafter_stages(quiet=args.json)
    elif re.fullmatch(r"trunc\d+", args.public):
        drafters = {args.public: private.truncated(int(args.public[5:]))}
    else:
        drafters = {args.public: load_model(args.public)}
        check_same_tokenizer(private.tokenizer, drafters[args.public].tokenizer)
    log = (lambda s: None) if args.json else (lambda s: print(f"pspec eval-acceptance: {s}",
                                                               file=sys.stderr, flush=True))
    es = evaluate.cached_eval_set(private.config, private.params,
                                  [format_prompt(private.tokenizer, p) for p in EVAL],
                                  new_tokens=args.new_tokens, seed=args.seed,
                                  eos_id=private.tokenizer.eos_token_id, log=log)
    rows = {name: evaluate.acceptance(es, d.config, d.params) for name, d in drafters.items()}
    last = list(rows)[-1]  # the drafter in use (the distilled one by default)
    res = {"public": last, "private": args.private, **rows[last]}
    if len(rows) > 1:
        res["drafters"] = rows
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"private model {private.name}; {res['positions']} positions of {len(EVAL)} held-out prompts")
    print(f"{'drafter':<44} {'α':>7} " + " ".join(f"{'tok/step γ' + str(g):>13}" for g in evaluate.GAMMAS))
    for name, r in rows.items():
        print(f"{name:<44} {r['acceptance_rate']:>7.4f} "
              + " ".join(f"{r['tokens_per_step'][str(g)]:>13.3f}" for g in evaluate.GAMMAS))
    return 0
