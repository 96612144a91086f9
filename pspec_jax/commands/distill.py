"""`pspec distill`: align a drafter (student) with the private model (teacher).

    pspec distill --teacher DEFAULT --student trunc8 --loss tv --data teacher \\
        --tokens 200000 --out DIR

writes DIR as a Hugging Face folder that `pspec generate --public DIR` loads, and reports
α before/after on the held-out prompts (exact, see `pspec eval-acceptance`).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

from pspec_jax.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="DEFAULT",
                   help="the private model: DEFAULT (SmolLM2-135M-Instruct) or a model folder/GGUF")
    p.add_argument("--base", default="auto",
                   help="the public weights the student is built from: auto (the public base "
                        "SmolLM2-135M-Instruct for --teacher DEFAULT or base; the teacher itself "
                        "for any other teacher), base, or a model folder")
    p.add_argument("--student", default="trunc8",
                   help="drafter preset: trunc{k}[-all|-last{n}|-norms|-lora{r}], keep{blocks}[-...] "
                        "(e.g. keep0-13.20-29-lora16: blocks 0..13 and 20..29) or fresh{n}[-ff{F}]")
    p.add_argument("--loss", choices=("tv", "fkl", "rkl", "jsd"), default="tv")
    p.add_argument("--data", choices=("corpus", "teacher", "onpolicy"), default="teacher")
    p.add_argument("--tokens", type=int, default=100_000,
                   help="training positions to process (steps = tokens / (batch × seq-len))")
    p.add_argument("--out", required=True, help="output folder (HF format) for the drafter")
    p.add_argument("--beta", type=float, default=0.5, help="JSD(β) weight")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=10, help="warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0, help="gradient clipping (global norm)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--topk", type=int, default=64,
                   help="teacher probabilities cached per position (+ the rest mass)")
    p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt and round")
    p.add_argument("--rounds", type=int, default=0,
                   help="teacher/corpus pool rounds (cached; 0: enough for ~2 passes)")
    p.add_argument("--refresh", type=int, default=8, help="on-policy: new drafter samples every N steps")
    p.add_argument("--onpolicy-prompts", type=int, default=16,
                   help="on-policy: prompts sampled per refresh")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from DIR/ckpt")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoints in DIR/ckpt and start over (without --resume or "
                        "--restart an existing DIR/ckpt is an error: it is never deleted silently)")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="stop training after this many minutes (0: no limit); the drafter is "
                        "written at the step reached")
    p.add_argument("--no-eval", action="store_true", help="skip α before/after")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")


def _load_teacher(spec: str):
    from pspec_jax.models.default import resolve_private

    return resolve_private(spec)


def _student_base(spec: str, teacher_spec: str, teacher):
    """(what the recipe records, the bundle) of the weights the student is built from. For
    the default teacher it is the public base: the drafter must hold public weights only."""
    from pspec_jax.models import check_same_tokenizer, load_default_base, load_model

    default_teacher = teacher_spec.upper() == "DEFAULT" or teacher_spec.lower() == "base"
    if spec == "auto":
        spec = "base" if default_teacher else "teacher"
    if spec == "teacher":
        return teacher_spec, teacher
    if spec.lower() == "base":
        base, recorded = load_default_base(), "DEFAULT"
    else:
        base, recorded = load_model(spec), spec
    if base.config.vocab_size != teacher.config.vocab_size:
        raise UserError(f"--base has {base.config.vocab_size} tokens, the teacher "
                        f"{teacher.config.vocab_size}")
    if base.tokenizer is not None and teacher.tokenizer is not None:
        check_same_tokenizer(teacher.tokenizer, base.tokenizer, "teacher", "--base")
    return recorded, base


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from distill import data, evaluate, export, students, train
    from distill.prompts import EVAL, TRAIN, format_prompt

    # Every option is checked before the teacher loads.
    if args.tokens < 1:
        raise UserError(f"--tokens must be >= 1, got {args.tokens}")
    if args.seq_len < 8:
        raise UserError(f"--seq-len must be >= 8, got {args.seq_len}")
    for name in ("topk", "per_prompt", "onpolicy_prompts"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.rounds < 0:
        raise UserError(f"--rounds must be >= 0 (0: automatic), got {args.rounds}")
    if args.data == "onpolicy" and args.refresh < 1:
        raise UserError(f"--refresh must be >= 1 with --data onpolicy, got {args.refresh}")
    # The trainer's options are validated by TrainConfig itself (max(1, ·) only keeps a bad
    # --batch from dividing by zero before TrainConfig names it).
    steps = max(1, math.ceil(args.tokens / (max(1, args.batch) * args.seq_len)))
    tc = train.TrainConfig(loss=args.loss, beta=args.beta, temperature=args.temperature, lr=args.lr,
                           warmup=args.warmup, weight_decay=args.weight_decay, clip=args.clip,
                           batch=args.batch, steps=steps, seed=args.seed,
                           checkpoint_every=args.checkpoint_every,
                           refresh=args.refresh if args.data == "onpolicy" else 0)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    ckpt_dir = out / "ckpt"
    if args.resume and args.restart:
        raise UserError("give --resume (continue the run in --out) or --restart (discard it), not both")
    if not args.resume and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        if not args.restart:
            raise UserError(f"{ckpt_dir} holds the checkpoints of an earlier run; continue it with "
                            "--resume or discard them with --restart")
        shutil.rmtree(ckpt_dir)  # --restart: its steps would clash with the new run's

    def log(msg: str) -> None:
        if not args.json:
            print(f"pspec distill: {msg}", file=sys.stderr, flush=True)

    teacher = _load_teacher(args.teacher)
    tcfg, tparams, tok = teacher
    if tok is None:
        raise UserError("the teacher has no tokenizer (needed for prompts and the corpus)")
    if args.seq_len > tcfg.max_seq_len:
        raise UserError(f"--seq-len {args.seq_len} exceeds the teacher's context {tcfg.max_seq_len}")
    base_spec, base = _student_base(args.base, args.teacher, teacher)
    student = students.build_student(args.student, base.config, base.params, seed=args.seed)
    eos = tok.eos_token_id
    train_prompts = [format_prompt(tok, p) for p in TRAIN]
    log(f"student {student.name}: {students.count(student.split()[0]):,} trained params of "
        f"{students.count(student.params):,}; {steps} steps of {args.batch}×{args.seq_len}")

    es = None
    before = None
    if not args.no_eval:
        es = evaluate.cached_eval_set(tcfg, tparams, [format_prompt(tok, p) for p in EVAL],
                                      eos_id=eos, log=log)
        before = evaluate.acceptance(es, student.config, students.effective(student.params))
        log(f"α before = {before['acceptance_rate']:.4f}")

    per_round = len(train_prompts) * args.per_prompt * args.seq_len
    rounds = args.rounds or max(1, math.ceil(steps * args.batch * args.seq_len / (2 * per_round)))
    onpolicy = None
    t_data = time.perf_counter()
    if args.data == "teacher":
        pool = data.teacher_pool(tcfg, tparams, train_prompts, seq_len=args.seq_len, k=args.topk,
                                 temperature=args.temperature, per_prompt=args.per_prompt,
                                 seed=args.seed, rounds=rounds, eos_id=eos, log=log)
    elif args.data == "corpus":
        pool = data.corpus_pool(tcfg, tparams, tok, seq_len=args.seq_len, k=args.topk,
                                temperature=args.temperature, seed=args.seed, rounds=rounds,
                                per_round=len(train_prompts) * args.per_prompt, log=log)
    else:
        n_p = min(args.onpolicy_prompts, len(train_prompts))

        def onpolicy(params, step):
            rng = np.random.default_rng([args.seed, step, 7])
            chosen = [train_prompts[i] for i in rng.choice(len(train_prompts), n_p, replace=False)]
            key = jax.random.fold_in(jax.random.PRNGKey(args.seed), 1_000_000 + step)
            drafts = data.sample_pool(student.config, params, chosen, args.per_prompt, args.seq_len,
                                      key, k=1, temperature=args.temperature, eos_id=eos)
            return data.rescore(tcfg, tparams, drafts, args.topk, args.temperature)
        pool = data.Pool(np.zeros((1, args.seq_len + 1), np.int32),
                         np.zeros((1, args.seq_len, 1), np.int32),
                         np.zeros((1, args.seq_len, 1), np.float32), np.zeros((1, args.seq_len), bool))
    data_s = time.perf_counter() - t_data
    if args.data != "onpolicy":
        log(f"pool: {len(pool)} sequences, {pool.trained_positions:,} trained positions ({data_s:.0f} s)")

    result = train.train(student, pool, tc, ckpt_dir=ckpt_dir, resume=args.resume,
                         onpolicy=onpolicy, progress=not args.json, log=log,
                         deadline=time.time() + 60 * args.time_limit if args.time_limit > 0 else None)
    after = None
    if es is not None:
        after = evaluate.acceptance(es, student.config, students.effective(result.params))
        log(f"α after = {after['acceptance_rate']:.4f} (before {before['acceptance_rate']:.4f})")
    meta = {
        "command": "pspec distill " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "distill" else None,
        "teacher": args.teacher, "base": base_spec, "student": student.name, "loss": args.loss, "data": args.data,
        "tokens": steps * args.batch * args.seq_len, "steps": steps, "seed": args.seed,
        "steps_run": result.steps, "tokens_run": result.steps * args.batch * args.seq_len,
        "lr": args.lr, "batch": args.batch, "seq_len": args.seq_len, "topk": args.topk,
        "temperature": args.temperature, "beta": args.beta,
        "train_seconds": round(result.seconds, 1), "data_seconds": round(data_s, 1),
        "train_tokens_per_second": round(result.tokens_per_second, 1),
        "final_loss": result.losses[-1] if result.losses else None,
        "acceptance_before": before["acceptance_rate"] if before else None,
        "acceptance_rate": after["acceptance_rate"] if after else None,
        "tokens_per_step": after["tokens_per_step"] if after else None,
    }
    export.save_drafter(out, student.config, students.effective(result.params), tok, meta,
                        trained=student.split(result.params)[0])
    log(f"drafter written to {out} (load it with `pspec generate --public {out}`)")
    if args.json:
        print(json.dumps(meta))
    return 0
