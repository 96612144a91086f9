"""`pspec eval-acceptance`: a drafter's exact acceptance rate α on held-out prompts.

α = mean over positions of Σ_x min(p(x), q(x)) along the private model's own samples at
T = 1 on the held-out prompts (chat template), and the expected tokens per secure step
(1 − α^(γ+1)) / (1 − α) for γ ∈ {4, 8}. Without --public it evaluates the drafter the demo
uses (the distilled default when present, else the truncated one).
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
    p.add_argument("--private", default="DEFAULT", help="DEFAULT or a model folder/GGUF")
    p.add_argument("--new-tokens", type=int, default=48, help="sampled tokens per prompt")
    p.add_argument("--seed", type=int, default=1234, help="seed of the private model's samples")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (acceptance_rate, tokens_per_step, ...)")


def run(args: argparse.Namespace) -> int:
    import re

    from distill import evaluate, export
    from distill.prompts import EVAL, format_prompt
    from pspec_jax.models import check_same_tokenizer, load_default_private, load_model

    if args.new_tokens < 1:
        raise UserError(f"--new-tokens must be >= 1, got {args.new_tokens}")
    private = load_default_private() if args.private.upper() == "DEFAULT" else load_model(args.private)
    if private.tokenizer is None:
        raise UserError("the private model has no tokenizer (needed for the prompts)")
    if args.public is None:
        drafter = export.default_drafter(quiet=args.json)
    elif re.fullmatch(r"trunc\d+", args.public):
        drafter = private.truncated(int(args.public[5:]))
    else:
        drafter = load_model(args.public)
        check_same_tokenizer(private.tokenizer, drafter.tokenizer)
    log = (lambda s: None) if args.json else (lambda s: print(f"pspec eval-acceptance: {s}",
                                                               file=sys.stderr, flush=True))
    es = evaluate.cached_eval_set(private.config, private.params,
                                  [format_prompt(private.tokenizer, p) for p in EVAL],
                                  new_tokens=args.new_tokens, seed=args.seed,
                                  eos_id=private.tokenizer.eos_token_id, log=log)
    res = evaluate.acceptance(es, drafter.config, drafter.params)
    res = {"public": args.public or drafter.name, "private": args.private, **res}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"drafter {res['public']}: acceptance rate α = {res['acceptance_rate']:.4f} over "
              f"{res['positions']} positions of {len(EVAL)} held-out prompts")
        for g, t in res["tokens_per_step"].items():
            print(f"  γ = {g}: {t:.3f} tokens per step")
    return 0
