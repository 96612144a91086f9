"""`pspec bench decode`: POST against standard secure decoding on the default pair.

One run decodes the same held-out prompts (chat template, `distill.prompts.EVAL`) with
  * standard secure decoding (one secure pass and a secure sample per token), and
  * POST with the aligned drafter (the one `make demo` uses) for each draft shape: chains
    of γ drafts, token trees of N nodes (the static shape for N), adaptive trees,
and reports, per shape and network preset, tokens, secure passes, the acceptance rate
(chains), nodes drafted per step (trees), tokens per step, compute seconds, bytes,
rounds, modelled seconds per token, and the speed-up of POST over standard secure
decoding (decode phase, per generated token; the prefill is common to both and excluded).
Every chain, tree and adaptive row is measured end to end.

Secure runs are expensive (seconds per pass on 2 CPU cores), so their acceptance figures
come from few tokens. A second, larger sample of the acceptance comes from plain
speculative decoding of the same pair with the same sampling — it emits exactly the same
law and accepts with exactly the same probabilities, so its tokens per step are those
POST would have — over 6 prompts × 32 tokens; the "projected" speed-up divides a POST
step's measured secure cost by those tokens per step. The drafter's baselines — the public
base as drafter (no distillation) and the base-derived drafter before distillation — are
only projected: a step's secure cost does not depend on the drafter, apart from drafting
time, which is measured for each in the clear. The secure
part is saved to OUT/decode_secure.json; `--reuse-secure` re-projects from it (e.g. for a
new drafter) without the hour of secure runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from pspec_jax.errors import UserError

PRESETS = ("lan", "wan")
GAMMAS = (4, 8)
TREES = (8, 16, 32)
ADAPTIVE_TREES = (16,)


def draft_shapes(gammas, trees, adaptive) -> list[tuple[str, int]]:
    """The measured configurations: ("chain", γ), ("tree", N), ("adaptive", N)."""
    return ([("chain", g) for g in gammas] + [("tree", n) for n in trees]
            + [("adaptive", n) for n in adaptive])


def shape_label(shape: str, budget: int) -> str:
    return {"chain": f"chain γ={budget}", "tree": f"tree N={budget}", "adaptive": f"adaptive N={budget}"}[shape]


def _post(private, drafter, ids, tokens, shape, budget, sampling, privacy, session, seed):
    from pspec_jax.decode.post import generate_post

    if shape == "chain":
        return generate_post(private, drafter, ids, tokens, budget, sampling, privacy, session=session, seed=seed)
    return generate_post(private, drafter, ids, tokens, sampling=sampling, privacy=privacy, session=session,
                         seed=seed, tree=budget, adaptive=shape == "adaptive")


def heldout_prompts(tokenizer, k: int) -> list[list[int]]:
    from distill.prompts import EVAL, format_prompt

    # Spread the picks over the four kinds (chat, story, code, factual) of the held-out set.
    step = max(1, len(EVAL) // max(k, 1))
    return [format_prompt(tokenizer, EVAL[(i * step + i) % len(EVAL)]) for i in range(k)]


def per_token(report: dict[str, Any], tokens: int) -> dict[str, float]:
    return {"compute_s": report["compute_s"] / tokens, "bytes": report["bytes_per_party"] / tokens,
            "rounds": report["rounds"] / tokens, **{p: report["modeled_s"][p] / tokens for p in PRESETS}}


def _plain_acceptance(private, drafter, prompts, gamma, sampling, tokens, seed=0) -> dict[str, float]:
    """Tokens per step and acceptance of plain speculative decoding (the same law as POST)."""
    from pspec_jax.decode import generate_spec

    steps = emitted = acc = 0
    for i, ids in enumerate(prompts):
        r = generate_spec(private, drafter, ids, tokens, gamma, sampling, seed=seed + i)
        steps += r.steps
        emitted += len(r.tokens)
        acc += sum(r.accepted_per_step)
    return {"tokens_per_step": emitted / steps, "acceptance": acc / (gamma * steps)}


def _drafting_seconds(drafter, prompt, gamma, sampling, repeats=3) -> float:
    """Seconds for the client to draft γ tokens in the clear (median, after compiling)."""
    import jax
    import jax.numpy as jnp

    from pspec_jax.decode.common import prefill, token_buffer
    from pspec_jax.decode.post import draft_program

    rows = len(prompt) + gamma + 8
    cache = prefill(drafter.config, drafter.params, prompt[:-1], rows)
    tokens = token_buffer(prompt, rows + gamma + 3)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = draft_program(drafter.config, sampling, gamma, drafter.params, cache, tokens,
                     jnp.int32(len(prompt)), jax.random.PRNGKey(i))
        jax.block_until_ready(out)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def secure_rows(private, drafter, name: str, prompts, shapes, tokens: int, sampling, privacy: str,
                log=print, comparison: str = "kogge-stone") -> dict[str, Any]:
    """The secure runs: standard secure decoding (the baseline, per generated token of the
    decode phase) and POST with `drafter` per draft shape (`draft_shapes`; measured rows,
    and each chain's cost of one step, drafting included, for the projections), with
    every comparison by `comparison` (`mpc.MPCConfig.comparison`)."""
    import dataclasses

    from pspec_jax.decode.secure import generate_secure
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure.ranges import calibrated_config
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

    max_len = max(len(p) for p in prompts) + tokens + max(b for _, b in shapes) + 1
    config, _ = calibrated_config(private.config, private.params, private.tokenizer,
                                  base=dataclasses.replace(DEFAULT_MPC_CONFIG, comparison=comparison))
    session = SecureSession(private.config, private.params, max_len=max_len, mpc_config=config)
    # Warm-up: compile every program a measured decode step runs (the T = 1 pass and the
    # secure sample; per shape, its pass width(s) and the rejection program), so the
    # figures are steady-state compute. Prefill shapes compile during the runs but are not
    # measured; an adaptive tree's rarer widths may compile during its runs.
    generate_secure(private, prompts[0], 2, sampling, session=session)
    for shape, budget in shapes:
        _post(private, drafter, prompts[0], 1, shape, budget, sampling, privacy, session, seed=0)
    log("warm-up (compilation) done")

    std_reports, std_tokens = [], 0
    for ids in prompts:
        t0 = time.perf_counter()
        r = generate_secure(private, ids, tokens, sampling, session=session)
        log(f"standard secure: {len(r.tokens)} tokens in {time.perf_counter() - t0:.0f} s")
        std_reports.append(r.extra["decode"])
        std_tokens += max(1, len(r.tokens) - 1)
    base = per_token(sum_reports(std_reports), std_tokens)

    rows: list[dict[str, Any]] = []
    step_costs: dict[int, dict[str, float]] = {}
    for shape, budget in shapes:
        label = shape_label(shape, budget)
        reports, emitted, steps, accepted, drafted, verify_wan = [], 0, 0, 0, 0, []
        for i, ids in enumerate(prompts):
            t0 = time.perf_counter()
            r = _post(private, drafter, ids, tokens, shape, budget, sampling, privacy, session, seed=i)
            log(f"POST {label}: {len(r.tokens)} tokens, {r.steps} steps in {time.perf_counter() - t0:.0f} s")
            reports.append(r.extra["decode"])
            emitted += len(r.tokens)
            steps += r.steps
            accepted += sum(r.accepted_per_step)
            drafted += r.drafted
            verify_wan.append(r.extra["verify_share"]["wan"])
        dec = sum_reports(reports)
        if shape == "chain":
            step_costs[budget] = per_token(dec, steps)
            step_costs[budget]["draft_s"] = _drafting_seconds(drafter, prompts[0], budget, sampling)
        per_tok = per_token(dec, emitted)
        rows.append({"drafter": name, "draft": label, "shape": shape, "budget": budget, "kind": "measured",
                     "tokens": emitted, "secure_passes": steps, "nodes_per_step": drafted / steps,
                     "acceptance": accepted / drafted, "tokens_per_step": emitted / steps,
                     "compute_s_per_token": per_tok["compute_s"],
                     "bytes_per_token": per_tok["bytes"], "rounds_per_token": per_tok["rounds"],
                     **{f"{p}_s_per_token": per_tok[p] for p in PRESETS},
                     **{f"speedup_{p}": base[p] / per_tok[p] for p in PRESETS},
                     "verify_share_wan": statistics.mean(verify_wan)})
    baseline = {"tokens": std_tokens, "secure_passes": std_tokens, "compute_s_per_token": base["compute_s"],
                "bytes_per_token": base["bytes"], "rounds_per_token": base["rounds"],
                **{f"{p}_s_per_token": base[p] for p in PRESETS}}
    return {"baseline": baseline, "rows": rows, "step_costs": {str(g): c for g, c in step_costs.items()}}


def projected_rows(private, drafters: dict[str, Any], secure: dict[str, Any], prompts, sampling,
                   tokens: int, log=print) -> list[dict[str, Any]]:
    """A POST step's measured secure cost (drafting time swapped for each drafter's own)
    over the tokens per step of plain speculative decoding on `prompts` (same law, same
    acceptance)."""
    base = secure["baseline"]
    rows = []
    for name, drafter in drafters.items():
        for g, c in sorted(secure["step_costs"].items(), key=lambda kv: int(kv[0])):
            gamma = int(g)
            t0 = time.perf_counter()
            acc = _plain_acceptance(private, drafter, prompts, gamma, sampling, tokens)
            draft = _drafting_seconds(drafter, prompts[0], gamma, sampling) - c["draft_s"]
            tps = acc["tokens_per_step"]
            log(f"plain spec {name} γ={gamma}: {tps:.2f} tokens/step ({time.perf_counter() - t0:.0f} s)")
            rows.append({"drafter": name, "draft": shape_label("chain", gamma), "shape": "chain",
                         "budget": gamma, "kind": "projected", "tokens": len(prompts) * tokens,
                         "nodes_per_step": gamma, "acceptance": acc["acceptance"],
                         "tokens_per_step": tps, "compute_s_per_token": (c["compute_s"] + draft) / tps,
                         "bytes_per_token": c["bytes"] / tps, "rounds_per_token": c["rounds"] / tps,
                         **{f"{p}_s_per_token": (c[p] + draft) / tps for p in PRESETS},
                         **{f"speedup_{p}": base[f"{p}_s_per_token"] * tps / (c[p] + draft) for p in PRESETS}})
    return rows


def sum_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    out = {"compute_s": sum(r["compute_s"] for r in reports),
           "bytes_per_party": sum(r["bytes_per_party"] for r in reports),
           "rounds": sum(r["rounds"] for r in reports),
           "modeled_s": {p: sum(r["modeled_s"][p] for r in reports) for p in PRESETS}}
    return out


def by_preset(result: dict[str, Any]) -> dict[str, Any]:
    """The `--json` layout: under each preset, the rows per draft shape and the best shape
    of the aligned drafter (its measured rows when there are any) with its speed-up."""
    out = {}
    for p in PRESETS:
        rows = [{k: v for k, v in r.items() if not (k.startswith("speedup_") or k.endswith("_s_per_token"))
                 or k in (f"speedup_{p}", f"{p}_s_per_token", "compute_s_per_token")}
                | {"speedup": r[f"speedup_{p}"]} for r in result["rows"]]
        first = rows[0]["drafter"]
        mine = [r for r in rows if r["drafter"] == first]
        best = max([r for r in mine if r["kind"] == "measured"] or mine, key=lambda r: r["speedup"])
        out[p] = {"rows": rows, "best": {"draft": best["draft"], "speedup": best["speedup"],
                                         "tokens_per_step": best["tokens_per_step"]},
                  "baseline_s_per_token": result["baseline"][f"{p}_s_per_token"]}
    return out


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.0))
    groups = sorted({(r["drafter"], r["kind"], r["shape"]) for r in result["rows"]})
    for (drafter, kind, shape), style in zip(groups, ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3)), (0, (3, 1, 1, 1)))):
        rs = sorted((r for r in result["rows"] if (r["drafter"], r["kind"], r["shape"]) == (drafter, kind, shape)),
                    key=lambda r: r["budget"])
        for p, marker in zip(PRESETS, ("o", "s")):
            ax.plot([r["budget"] for r in rs], [r[f"speedup_{p}"] for r in rs], linestyle=style, marker=marker,
                    label=f"{p}, {shape}, {drafter} ({kind})")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("drafts per step (γ, or the tree's node budget N)")
    ax.set_ylabel("speed-up over standard secure decoding")
    ax.set_title("POST vs standard secure decoding (SmolLM2-135M)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, not over the points
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def load_secure_costs(path: Path) -> dict[str, Any]:
    """The secure part of an earlier run (`--reuse-secure`), checked field by field so that
    a truncated or hand-edited file is a one-line error, not a KeyError mid-way."""
    import json
    import math

    if not path.exists():
        raise UserError(f"--reuse-secure: {path} does not exist (run without it first)")
    try:
        secure = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"--reuse-secure: cannot read {path}: {str(err).splitlines()[0]}") from None

    def bad(what: str) -> UserError:
        return UserError(f"--reuse-secure: {path} is not a saved secure run ({what}); run without "
                         "--reuse-secure to measure again")

    def number(d: Any, key: str, where: str) -> None:
        v = d.get(key) if isinstance(d, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise bad(f"{where}.{key} is {v!r}, not a non-negative number")

    if not isinstance(secure, dict):
        raise bad("not a JSON object")
    for key in ("baseline", "step_costs", "settings"):
        if not isinstance(secure.get(key), dict):
            raise bad(f"no {key!r} object")
    if not isinstance(secure.get("rows"), list) or not all(isinstance(r, dict) for r in secure["rows"]):
        raise bad("no 'rows' list")
    for p in PRESETS:
        number(secure["baseline"], f"{p}_s_per_token", "baseline")
    if not secure["step_costs"]:
        raise bad("no step costs")
    for g, c in secure["step_costs"].items():
        if not g.isdigit() or int(g) < 1:
            raise bad(f"step_costs key {g!r} is not a γ")
        for key in ("compute_s", "bytes", "rounds", "draft_s", *PRESETS):
            number(c, key, f"step_costs[{g}]")
        if any(c[p] == 0 for p in PRESETS):
            raise bad(f"step_costs[{g}] has no modelled time")
    for i, r in enumerate(secure["rows"]):
        if not all(isinstance(r.get(k), str) for k in ("drafter", "kind", "draft", "shape")):
            raise bad(f"rows[{i}] lacks its drafter, kind or draft shape")
        for key in ("budget", "tokens_per_step", *(f"speedup_{p}" for p in PRESETS)):
            number(r, key, f"rows[{i}]")
    return secure


def run_bench(args) -> dict:
    import json
    import sys

    from distill.export import default_drafter_stages
    from pspec_jax.decode import Sampling
    from pspec_jax.decode.common import check_gamma, check_tree
    from pspec_jax.decode.post import check_privacy
    from pspec_jax.models import load_default_private, load_model

    gammas = tuple(args.gammas if args.gammas is not None else ((2, 4) if args.quick else GAMMAS))
    trees = tuple(args.trees if args.trees is not None else ((4,) if args.quick else TREES))
    adaptive = tuple(args.adaptive_trees if args.adaptive_trees is not None else (() if args.quick else ADAPTIVE_TREES))
    for g in gammas:
        check_gamma(g, post=True)
    for n in trees + adaptive:
        check_tree(n)
    shapes = draft_shapes(gammas, trees, adaptive)
    if not shapes:
        raise UserError("nothing to measure: give at least one of --gammas, --trees, --adaptive-trees")
    if args.tokens < 1 or args.prompts < 1:
        raise UserError("--tokens and --prompts must be >= 1")
    check_privacy(args.privacy)
    sampling = Sampling(args.temperature)
    out_dir = Path(args.out or "out")
    costs_path = out_dir / "decode_secure.json"
    # Read the saved secure runs before the models load: a bad file fails in a second.
    secure = load_secure_costs(costs_path) if args.reuse_secure else None
    private = load_default_private()
    if args.public:
        aligned = load_model(args.public, name="drafter")
        drafters = {aligned.name: aligned}
    else:  # the shipped drafter first, then its baselines (base as drafter, before distillation)
        stages = default_drafter_stages(quiet=True)
        aligned = list(stages.values())[-1]
        drafters = {aligned.name: aligned, **{n: d for n, d in stages.items() if d is not aligned}}
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    if secure is None:
        prompts = heldout_prompts(private.tokenizer, args.prompts)
        comparison = getattr(args, "comparison", "kogge-stone")
        secure = secure_rows(private, aligned, aligned.name, prompts, shapes, args.tokens, sampling,
                             args.privacy, log=log, comparison=comparison)
        secure["settings"] = {"tokens": args.tokens, "prompts": args.prompts, "temperature": args.temperature,
                              "privacy": args.privacy, "comparison": comparison}
        out_dir.mkdir(parents=True, exist_ok=True)
        costs_path.write_text(json.dumps(secure, indent=1))
    n_plain, plain_tokens = (2, 16) if args.quick else (6, 32)
    result = {"baseline": secure["baseline"],
              "rows": secure["rows"] + projected_rows(private, drafters, secure, heldout_prompts(private.tokenizer, n_plain),
                                                      sampling, plain_tokens, log=log),
              "settings": {**secure["settings"], "plain_prompts": n_plain, "plain_tokens": plain_tokens}}
    png = plot(result, out_dir / "decode_speedup.png")
    presets = by_preset(result)
    if args.json:
        return {**presets, "baseline": result["baseline"], "settings": result["settings"], "plot": str(png)}
    cols = ["drafter", "draft", "kind", "tokens", "nodes_per_step", "acceptance", "tokens_per_step", "compute_s_per_token",
            "bytes_per_token", "rounds_per_token", "lan_s_per_token", "wan_s_per_token", "speedup_lan",
            "speedup_wan", "verify_share_wan"]
    rows = [{c: r.get(c, "") for c in cols} for r in result["rows"]]
    base = {"drafter": "standard secure", "draft": "-", "kind": "measured", **result["baseline"]}
    return {"decode": [{c: base.get(c, "") for c in cols}, *rows],
            "best": [{"preset": p, **v["best"]} for p, v in presets.items()],
            "plot": [{"path": str(png)}]}
