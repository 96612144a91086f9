"""`pspec bench {mpc,forward,decode}`: benchmarks that print tables (and `--json`)."""

from __future__ import annotations

import importlib.util
import json

from pspec_jax.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("what", choices=["mpc", "forward", "decode"], help="which benchmark")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (median reported)")
    parser.add_argument("--quick", action="store_true", help="skip the largest shapes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--out", default="out", help="folder for plots (default: out)")
    parser.add_argument("--comparison", choices=["kogge-stone", "dcf"], default="kogge-stone",
                        help="forward and decode: how comparisons run: kogge-stone (default, little dealer data) "
                             "or dcf (function secret sharing: one round each, larger dealer keys)")
    forward = parser.add_argument_group("forward (one secure pass over T tokens)")
    forward.add_argument("--private", metavar="MODEL", default=None,
                         help="the private model: DEFAULT (the fine-tune), base, or an HF folder / .gguf")
    forward.add_argument("--shape", default=None,
                         help="instead, random weights of a real shape: gpt2-small, smollm2-135m, d960, llama7b-layer")
    decode = parser.add_argument_group("decode (POST vs standard secure decoding)")
    decode.add_argument("--gammas", type=int, nargs="*", default=None,
                        help="chains of γ drafts per step (default 4 8)")
    decode.add_argument("--trees", type=int, nargs="*", default=None,
                        help="token trees of N nodes per step, the static shape for N (default 8 16 32)")
    decode.add_argument("--adaptive-trees", type=int, nargs="*", default=None, dest="adaptive_trees",
                        help="adaptive token trees of at most N nodes (default 16)")
    decode.add_argument("--tokens", type=int, default=16, help="tokens per prompt and run (default 16)")
    decode.add_argument("--prompts", type=int, default=2, help="held-out prompts decoded securely (default 2)")
    decode.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy")
    decode.add_argument("--privacy", default="strict", help="POST privacy mode: strict (default) or paper")
    decode.add_argument("--public", metavar="PATH", default=None,
                        help="the aligned drafter (default: the one `make demo` uses)")
    decode.add_argument("--reuse-secure", action="store_true", dest="reuse_secure",
                        help="reuse the secure runs saved in OUT/decode_secure.json (re-project only)")


def _bench_mpc(args) -> dict:
    from pspec_jax.benchmarks import mpc as bench

    shapes = [(5, 576, 1536)] if args.quick else [(512, 768, 768), (5, 576, 1536)]
    result = {"ring_matmul": bench.ring_matmul_rows(shapes, args.repeats),
              "protocols": bench.protocol_rows(args.repeats, only_small=args.quick)}
    if importlib.util.find_spec("pspec_jax.benchmarks.nonlinear") is not None:
        from pspec_jax.benchmarks.nonlinear import nonlinear_rows

        result["nonlinear"] = nonlinear_rows(args.repeats)
    return result


def run(args) -> int:
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    if args.private and args.shape:
        raise UserError("give --private PATH or --shape NAME, not both")
    if args.shape:
        from pspec_jax.models.bundle import RANDOM_SHAPES

        if args.shape not in RANDOM_SHAPES:
            raise UserError(f"unknown --shape {args.shape!r}; choose from {', '.join(RANDOM_SHAPES)}")
    runners = {"mpc": _bench_mpc}
    for name, module in (("forward", "pspec_jax.benchmarks.forward"), ("decode", "pspec_jax.benchmarks.decode")):
        if importlib.util.find_spec(module) is not None:
            runners[name] = importlib.import_module(module).run_bench
    if args.what not in runners:
        raise UserError(f"`pspec bench {args.what}` is not available in this build yet")
    result = runners[args.what](args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    from pspec_jax.benchmarks.table import format_table

    for section, rows in result.items():
        print(f"\n## {section}\n")
        print(format_table(rows))
    return 0
