"""The secure modes of `pspec generate` (secure, post): their option checks, runners and
the cost report they print. The decoding itself lives in `pspec_jax.decode`."""

from __future__ import annotations

import mpc
from pspec_jax.decode.common import GenerationResult
from pspec_jax.decode.costs import format_costs, profile
from pspec_jax.decode.post import generate_post
from pspec_jax.decode.secure import generate_secure
from pspec_jax.errors import UserError


def report_text(res: GenerationResult) -> str:
    return format_costs({k: v for k, v in res.extra.items() if k in (
        "secure_passes", "compute_s", "bytes_per_party", "rounds", "modeled_s", "per_token")}, f"[{res.mode}] costs")


def check_network(name: str) -> str:
    """The one check of a network preset name (lan, wan, dc); returns it. The CLI calls it
    before loading any model."""
    try:
        mpc.network(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    return name


def finish_cli(res: GenerationResult, args, lines: tuple[str, ...] = ()) -> GenerationResult:
    """The secure modes' CLI epilogue: drop the ledger from the result, add the network and
    (`--profile`) the per-op profile, and print the cost table plus `lines` unless --json."""
    ledger, ranges = res.extra.pop("_ledger"), res.extra.pop("_ranges")
    res.extra["network"] = args.network
    if args.profile:
        res.extra["profile"] = profile(ledger)
        if ranges is not None:
            res.extra["profile"]["ranges"] = ranges
    if "verify_share" in res.extra:  # post mode, simulated or real
        share = ", ".join(f"{k} {100 * v:.1f}%" for k, v in res.extra["verify_share"].items())
        lines = (f"  verification share of the decode steps' modelled time: {share}", *lines)
    if not args.json:
        print("\n" + report_text(res))
        for line in lines:
            print(line)
        if args.profile:
            for k, v in list(res.extra["profile"]["by_op"].items())[:15]:
                print(f"  {k:32s} {v['bytes_per_party']:>14,} B  {v['rounds']:>6} rounds")
            for k, v in res.extra["profile"].get("ranges", {}).items():
                print(f"  ranges: {k} = {v}")
    return res


def run_secure(req) -> GenerationResult:
    """`pspec generate --mode secure` (see pspec_jax.commands.generate, which has checked
    --network before loading the model)."""
    res = generate_secure(req.private, req.prompt_ids, req.max_new_tokens, req.sampling,
                          req.eos_id, req.on_tokens)
    return finish_cli(res, req.args)


def run_post(req) -> GenerationResult:
    """`pspec generate --mode post` (see pspec_jax.commands.generate, which has checked
    --network and --privacy before loading the models)."""
    args = req.args
    res = generate_post(req.private, req.drafter(), req.prompt_ids, req.max_new_tokens, req.gamma,
                        req.sampling, args.privacy, req.eos_id, req.on_tokens, seed=req.seed,
                        tree=args.tree, adaptive=args.adaptive)
    return finish_cli(res, args)
