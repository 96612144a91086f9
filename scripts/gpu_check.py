#!/usr/bin/env python3
"""One short check of pspec on an accelerator (or, for comparison, on the same machine's
CPU cores): the secure forward of a SmolLM2-135M-shaped private model, POST's secure
verification over the vocabulary, and standard secure decoding vs POST per network preset.

The model has SmolLM2-135M's exact shape (`smollm2_135m_config`) with RANDOM weights
(`init_params`, std 0.02; the checkpoint is not carried): a secure pass's compute, bytes
and rounds depend only on shapes, never on the values (every op is a fixed ring program),
so the timings are those of the real model.

Sections (each in try/except: a failure prints one line and the next section runs; the
JSON is rewritten after every section, so a run killed by a timeout keeps what it did):
  env       jax version, devices, x64
  forward   secure passes over T new tokens (default T = 1, 8, 9) after a prefill
            (chunks of 8 tokens without logits, reusing the T = 8 program): set-up, compile
            (first call minus a later one), compute (median; split into the offline
            program, the dealer's material, and the online one, which has no dealer host
            callback: `mpc.Context(split=True)`), online bytes per party,
            rounds, modelled lan / wan / dc seconds (`mpc.network`), as `pspec bench
            forward` (`pspec_jax.benchmarks.forward.time_pass`)
  verify    POST's rejection over (γ+1) × V shared logits (`speculative_verify` strict at
            temperature 1, `greedy_verify`) via `pspec_jax.secure.session.verify_program`, and
            standard decoding's next-token step over 1 × V (sample / argmax)
  decode    standard secure decoding vs POST per network preset from the measured pass
            and verification costs; POST per token is PROJECTED at --tokens-per-step
  plain     the plain (float32, non-secure) forward on the same device, for reference

    PYTHONPATH=. python3 scripts/gpu_check.py --platform gpu          # the device run
    PYTHONPATH=. python3 scripts/gpu_check.py --platform cpu --quick  # 2-layer tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import statistics
import sys
import time
import traceback

# README ("Measured end to end with the shipped drafter"): 2.46 tokens per step at γ = 8,
# temperature 1, strict privacy (scripts/post_end_to_end.py on the 2-core CPU).
README_TOKENS_PER_STEP = 2.46
README_GAMMA = 8
NETS = ("lan", "wan", "dc")

T0 = time.perf_counter()
RESULT: dict = {"errors": []}
ARGS = None


def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


def save() -> None:
    path = ARGS.json_path
    if not path:
        return
    RESULT["elapsed_s"] = round(elapsed(), 2)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(RESULT, f, indent=1, default=str)
    os.replace(tmp, path)


def section(name: str):
    """Decorator: run, record failures in one line (full traceback on stderr), save."""

    def wrap(fn):
        def run(*a, **k):
            say(f"\n## {name}  (t = {elapsed():.1f} s)\n")
            try:
                return fn(*a, **k)
            except Exception as err:  # noqa: BLE001 - a check must go on
                msg = f"{name}: FAILED {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                say(f"**{msg}**")
                traceback.print_exc(file=sys.stderr)
                RESULT["errors"].append(msg)
                return None
            finally:
                save()

        return run

    return wrap


class Stream:
    """A markdown table printed row by row (survives a kill mid-section)."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        say("| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|")

    def row(self, r: dict) -> None:
        from pspec_jax.benchmarks.table import fmt

        say("| " + " | ".join(fmt(r.get(c, "")) for c in self.columns) + " |")


def cost_fields(compute: float, ledger) -> dict:
    """Online bytes / rounds of one call's ledger and the modelled seconds per preset
    (compute + Σ rounds·latency + bytes/bandwidth, `mpc.NetworkModel.seconds`)."""
    import mpc

    t = ledger.totals()
    d = ledger.totals("dealer")
    out = {"compute_s": compute, "bytes_per_party": t.bytes_per_party, "rounds": t.rounds,
           "dealer_bytes": d.bytes0 + d.bytes1}
    for n in NETS:
        out[f"{n}_s"] = compute + mpc.network(n).seconds(ledger)
        out[f"{n}_comm_s"] = mpc.network(n).seconds(ledger)
    return out


# ---------------------------------------------------------------------------- sections
@section("environment")
def env_section() -> None:
    import jax
    import jaxlib
    import numpy as np

    devs = jax.devices()
    env = {"python": sys.version.split()[0], "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "numpy": np.__version__, "backend": jax.default_backend(),
           "devices": [f"{d.platform}:{d.device_kind}" for d in devs], "device_count": len(devs),
           "x64": bool(jax.config.jax_enable_x64), "cpu_count": os.cpu_count(),
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""), "host": _platform.node(),
           "args": vars(ARGS)}
    RESULT["env"] = env
    for k in ("python", "jax", "jaxlib", "numpy", "backend", "devices", "x64", "cpu_count", "JAX_PLATFORMS"):
        say(f"- {k}: {env[k]}")
    if ARGS.platform == "gpu" and env["backend"] != "gpu":
        raise RuntimeError(f"--platform gpu but jax's backend is {env['backend']!r}")


def build_model():
    import jax

    from pspec_jax.models import arch
    from pspec_jax.models.config import smollm2_135m_config, tiny_config

    if ARGS.quick:
        cfg = tiny_config("llama", max_seq_len=128)
        name = "tiny llama (2 layers, d 32, V 64) - --quick"
    else:
        cfg = smollm2_135m_config(n_layers=ARGS.layers)
        name = f"SmolLM2-135M shape, {cfg.n_layers} layers, RANDOM weights (std 0.02)"
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(0)
    params = arch.init_params(cfg, key, std=0.02)
    params = arch.randomize_norms(params, jax.random.fold_in(key, 1), spread=0.1)
    jax.block_until_ready(params)
    RESULT["model"] = {"name": name, "config": cfg.to_hf_dict(), "params": arch.param_count(params),
                       "init_s": round(time.perf_counter() - t0, 2),
                       "note": "random weights at realistic scale: a secure pass's compute, bytes and rounds "
                               "depend only on shapes, not on weight values"}
    say(f"- model: {name}; {arch.param_count(params):,} params; init {time.perf_counter() - t0:.1f} s",
        "- random weights: the secure pass's compute, bytes and rounds depend only on shapes, not values")
    return cfg, params


STATE: dict = {}


@section("secure session: set-up and prefill")
def session_section(cfg, params) -> None:

    from pspec_jax.secure import SecureSession

    max_len = max(ARGS.max_len, ARGS.prefill + max(ARGS.tokens))
    t0 = time.perf_counter()
    session = SecureSession(cfg, params, max_len=max_len, split=True)
    setup_wall = time.perf_counter() - t0
    setup = session.ledger.totals("setup")
    RESULT["setup"] = {"setup_s": session.setup_s, "session_s": setup_wall,
                       "setup_bytes_server": setup.bytes1, "max_len": max_len}
    say(f"- session set-up (weights masked and opened once): {session.setup_s:.2f} s "
        f"({setup_wall:.2f} s with the cache), {setup.bytes1:,} bytes from the server; max_len {max_len}")
    STATE["session"] = session


@section("secure prefill")
def prefill_section(cfg) -> None:
    import jax.numpy as jnp

    session = STATE.get("session")
    if session is None:
        raise RuntimeError("no session (its set-up failed)")
    if ARGS.prefill and ARGS.prefill_mode == "compute":
        # In chunks of the largest measured T that divides it: that pass's program is reused.
        chunk = next((T for T in sorted(ARGS.tokens, reverse=True) if ARGS.prefill % T == 0), ARGS.prefill)
        ids = jnp.arange(ARGS.prefill, dtype=jnp.int32) * 7 % cfg.vocab_size
        mark = session.ledger.snapshot()
        t0 = time.perf_counter()
        for i in range(0, ARGS.prefill, chunk):
            session.forward(ids[i:i + chunk], with_logits=False)
        pre_s = time.perf_counter() - t0
        pre = session.ledger.since(mark).totals()
        RESULT["prefill"] = {"tokens": ARGS.prefill, "chunk": chunk, "seconds": pre_s,
                             "bytes_per_party": pre.bytes_per_party, "rounds": pre.rounds}
        say(f"- prefill {ARGS.prefill} tokens in chunks of {chunk}, no logits: {pre_s:.2f} s "
            f"(compile included unless precompiled), {pre.rounds:,} rounds")
    elif ARGS.prefill:
        # As `pspec bench forward`: the cache length is set without computing its rows (a
        # pass's cost depends only on shapes).
        session.cache = session.cache.rollback(ARGS.prefill)
        say(f"- cache length set to {ARGS.prefill} without a prefill pass (as `pspec bench forward`)")
    STATE["context"] = session.length


FORWARD_COLS = ["T", "context", "first_call_s", "compile_s", "compute_s", "offline_s", "online_s", "compute_min_s",
                "bytes_per_party", "rounds", "lan_s", "wan_s", "dc_s", "compute_s/T1", "wan_s/T1"]


@section("secure forward passes (SecureSession.forward)")
def forward_section(tokens) -> None:
    from pspec_jax.benchmarks.forward import time_pass

    session, context = STATE.get("session"), STATE.get("context", 0)
    if session is None:
        raise RuntimeError("no session (its set-up failed)")
    table = Stream(FORWARD_COLS)
    rows = RESULT.setdefault("forward", [])
    passes = STATE.setdefault("pass", {})
    for T in tokens:
        phases: list = []
        first, times, one = time_pass(session, T, context, ARGS.repeats, phases)
        compute = statistics.median(times)
        r = {"T": T, "context": context, "first_call_s": first, "compile_s": max(first - compute, 0.0),
             **cost_fields(compute, one), "compute_min_s": min(times), "times_s": times,
             "offline_s": statistics.median(p[0] for p in phases), "online_s": statistics.median(p[1] for p in phases)}
        base = next((x for x in rows if x["T"] == 1), r)
        r["compute_s/T1"] = r["compute_s"] / base["compute_s"]
        r["wan_s/T1"] = r["wan_s"] / base["wan_s"]
        rows.append(r)
        passes[T] = (compute, one)
        table.row(r)
        save()
    session.rollback(context)


CASE_NAMES = {(True, "sample"): "next_token sample (standard)", (True, "greedy"): "next_token argmax (standard)",
              (False, "sample"): "speculative_verify strict (POST)", (False, "greedy"): "greedy_verify (POST)"}


def verify_ctx():
    """The verification's own context (the session's configuration), apart from the
    forward's: its programs can be traced while the session's compile."""
    import mpc
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG, next_token_program

    if "verify_ctx" not in STATE:
        STATE["verify_ctx"] = mpc.Context(DEFAULT_MPC_CONFIG)
        STATE["next_token"] = next_token_program
    return STATE["verify_ctx"]


def verify_call(cfg, g: int, mode: str):
    """(program, args, static) of one case: γ = 0 is standard decoding's token step over
    1 × V, else POST's verification over (γ+1) × V random shared logits."""
    import jax.numpy as jnp
    import numpy as np

    from pspec_jax.secure.session import verify_program

    cache = STATE.setdefault("verify_args", {})
    if (g, mode) in cache:
        return cache[(g, mode)]
    ctx, V = verify_ctx(), cfg.vocab_size
    rng = np.random.default_rng(g)
    logits = ctx.share(rng.normal(size=(g + 1, V)) * 3.0)
    if g == 0:
        out = STATE["next_token"], (logits,), {"temperature": 0.0 if mode == "greedy" else 1.0}
    else:
        drafts = jnp.asarray(rng.integers(0, V, g), jnp.int32)
        q = rng.dirichlet(np.full(V, 0.1), size=g)
        thresholds = jnp.asarray(rng.uniform(size=g) * q[np.arange(g), np.asarray(drafts)])
        q_rows = jnp.asarray(np.concatenate([q, np.zeros((1, V))]), jnp.float32)
        out = verify_program, (logits, drafts, thresholds, q_rows), {
            "temperature": 0.0 if mode == "greedy" else 1.0, "privacy": "strict"}
    cache[(g, mode)] = out
    return out


@section("verification (POST rejection) and standard decoding's token step")
def verify_section(cfg, cases) -> None:
    import jax

    ctx, V = verify_ctx(), cfg.vocab_size
    cols = ["step", "gamma", "shape", "first_call_s", "compile_s", "compute_s", "bytes_per_party", "rounds",
            "lan_s", "wan_s", "dc_s"]
    table = Stream(cols)
    rows = RESULT.setdefault("verify", [])
    STATE.setdefault("verify", {})
    for g, mode in cases:
        name = CASE_NAMES[(g == 0, mode)]
        try:
            fn, args, static = verify_call(cfg, g, mode)
            times = []
            for i in range(ARGS.verify_repeats + 1):
                mark = ctx.ledger.snapshot()
                t0 = time.perf_counter()
                jax.block_until_ready(fn(ctx, *args, **static))
                dt = time.perf_counter() - t0
                if i == 0:
                    first = dt
                else:
                    times.append(dt)
            one = ctx.ledger.since(mark)
            compute = statistics.median(times)
            r = {"step": name, "gamma": g, "mode": mode, "shape": f"{g + 1}x{V}", "first_call_s": first,
                 "compile_s": max(first - compute, 0.0), **cost_fields(compute, one), "times_s": times}
            rows.append(r)
            STATE["verify"][(g, mode)] = (compute, one)
            table.row(r)
        except Exception as err:  # noqa: BLE001
            msg = f"verify {name} γ={g}: FAILED {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            say(f"**{msg}**")
            traceback.print_exc(file=sys.stderr)
            RESULT["errors"].append(msg)
        save()


@section("parallel compilation (this phase's programs, before its runs)")
def compile_section(cfg, tokens, cases) -> None:
    """Traces every program in this thread and compiles them in a pool of threads (XLA
    compiles without the GIL): compile wall time ≈ the slowest program, not the sum."""
    import concurrent.futures

    workers = ARGS.parallel_compile
    t0 = time.perf_counter()
    futures = []
    session, ctx = STATE.get("session"), verify_ctx()
    ctxs = {"session": session.ctx if session is not None else None, "verify": ctx}
    before = {name: set(c._programs) for name, c in ctxs.items() if c is not None}
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        if session is not None and tokens:
            session.precompile(tokens, executor=ex)
        for g, mode in cases:
            fn, args, static = verify_call(cfg, g, mode)
            fn.precompile(ctx, *args, executor=ex, **static)
        futures = [(name, v[0]) for name, c in ctxs.items() if c is not None
                   for k, v in c._programs.items() if k not in before[name]]
        traced = time.perf_counter() - t0
        say(f"- traced {len(futures)} programs in {traced:.1f} s; compiling on {workers} threads ...")
        done_at = []
        for name, f in futures:
            if isinstance(f, concurrent.futures.Future):
                try:
                    f.result()
                except Exception as err:  # noqa: BLE001  (that program compiles again on its first call)
                    say(f"**compile {name}: FAILED {type(err).__name__}: {str(err).splitlines()[0]}**")
                    RESULT["errors"].append(f"compile {name}: {err}")
                done_at.append(time.perf_counter() - t0)
    for c in ([STATE["session"].ctx] if STATE.get("session") is not None else []) + [verify_ctx()]:
        for k, (prog, entries, out_info) in list(c._programs.items()):
            if isinstance(prog, concurrent.futures.Future) and prog.exception() is not None:
                del c._programs[k]
    total = time.perf_counter() - t0
    RESULT.setdefault("compile", []).append({"programs": len(futures), "tokens": list(tokens),
                                             "cases": [list(c) for c in cases], "trace_s": traced,
                                             "wall_s": total, "workers": workers, "done_at_s": done_at})
    say(f"- {len(futures)} programs traced and compiled in {total:.1f} s wall ({traced:.1f} s tracing); "
        "first calls below then exclude compilation")


@section("standard secure decoding vs POST (per network preset)")
def decode_section() -> None:
    import mpc

    passes, verifies = STATE.get("pass", {}), STATE.get("verify", {})
    g, tps = ARGS.post_gamma, ARGS.tokens_per_step
    if 1 not in passes or (0, "sample") not in verifies:
        raise RuntimeError("needs the T = 1 pass and the standard sampling step")
    rows = RESULT["decode"] = []

    def combine(parts, per: float, **label):
        compute = sum(c for c, _ in parts)
        led = mpc.Ledger()
        for _, lg in parts:
            led.entries.extend(lg.entries)
        r = {**label, **cost_fields(compute, led)}
        for k in ("compute_s", "bytes_per_party", "rounds", "dealer_bytes", *(f"{n}_s" for n in NETS),
                  *(f"{n}_comm_s" for n in NETS)):
            r[k] = r[k] / per
        r["MB_per_party"] = r["bytes_per_party"] / 1e6
        return r

    std = combine([passes[1], verifies[(0, "sample")]], 1.0, row="standard: 1 pass (T=1) + sample",
                  kind="measured, per token", tokens_per_step=1.0)
    out = [std]
    if g + 1 in passes and (g, "sample") in verifies:
        step = [passes[g + 1], verifies[(g, "sample")]]
        out.append(combine(step, 1.0, row=f"POST step: 1 pass (T={g + 1}) + verify γ={g}",
                           kind="measured, per step", tokens_per_step=tps))
        post = combine(step, tps, row=f"POST γ={g} per token at {tps} tokens/step",
                       kind="PROJECTED (measured step / README's CPU-measured tokens per step)",
                       tokens_per_step=tps)
        for n in NETS:
            post[f"speedup_{n}"] = std[f"{n}_s"] / post[f"{n}_s"]
        out.append(post)
    else:
        say(f"- (no T = {g + 1} pass or γ = {g} verification measured: no POST rows)")
    # Greedy (temperature 0): the standard token step is a secure argmax.
    if (0, "greedy") in verifies:
        out.append(combine([passes[1], verifies[(0, "greedy")]], 1.0, row="standard greedy: 1 pass + argmax",
                           kind="measured, per token", tokens_per_step=1.0))
    rows.extend(out)
    cols = ["row", "kind", "tokens_per_step", "compute_s", "MB_per_party", "rounds", "lan_s", "wan_s", "dc_s",
            "speedup_lan", "speedup_wan", "speedup_dc"]
    table = Stream(cols)
    for r in out:
        table.row(r)
    say("", f"(temperature 1, strict privacy; the POST per-token row is projected: the measured step cost "
            f"divided by {tps} tokens per step, the README's end-to-end figure at γ = {README_GAMMA} on CPU; "
            "drafting in the clear is not included, ~0.3 s per step on CPU)")


@section("plain forward (float32, not secure), same device")
def plain_section(cfg, params) -> None:
    import jax
    import jax.numpy as jnp

    from pspec_jax.models import arch
    from pspec_jax.models.cache import init_cache

    max_len = max(ARGS.max_len, ARGS.prefill + max(ARGS.tokens))
    params = jax.device_put(params)
    cache = init_cache(cfg, 1, max_len)
    if ARGS.prefill:
        _, cache = arch.forward_jit(cfg, params, jnp.arange(ARGS.prefill, dtype=jnp.int32)[None] % cfg.vocab_size,
                                    cache)
    table = Stream(["T", "context", "first_call_s", "compute_s"])
    rows = RESULT.setdefault("plain", [])
    for T in ARGS.tokens:
        ids = (jnp.arange(T, dtype=jnp.int32)[None] * 3) % cfg.vocab_size
        times = []
        for i in range(ARGS.repeats + 2):
            t0 = time.perf_counter()
            jax.block_until_ready(arch.forward_jit(cfg, params, ids, cache))
            times.append(time.perf_counter() - t0)
        r = {"T": T, "context": int(cache.length), "first_call_s": times[0], "compute_s": statistics.median(times[1:])}
        rows.append(r)
        table.row(r)


def main(argv=None) -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--platform", choices=["cpu", "gpu"], default=None,
                   help="force a backend (default: JAX_PLATFORMS, else jax's choice)")
    p.add_argument("--quick", action="store_true", help="a 2-layer tiny model (d 32, V 64): a smoke test")
    p.add_argument("--layers", type=int, default=30, help="blocks of the SmolLM2-shaped model (default 30)")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, README_GAMMA + 1, 8],
                   help="new tokens per measured secure pass (default 1 9 8; 9 = γ 8 + 1 for POST)")
    p.add_argument("--prefill", type=int, default=18,
                   help="tokens in the cache before the passes (default 18: two chunks of 9, reusing the T = 9 "
                        "program)")
    p.add_argument("--prefill-mode", choices=["compute", "skip"], default="compute", dest="prefill_mode",
                   help="compute: a secure prefill without logits; skip: only set the cache length (as `pspec "
                        "bench forward`; the pass's cost does not depend on the cached values)")
    p.add_argument("--max-len", type=int, default=80, dest="max_len",
                   help="cache rows (attention width; `pspec bench forward` uses 64 + 16 = 80)")
    p.add_argument("--parallel-compile", type=int, default=min(8, os.cpu_count() or 1), dest="parallel_compile",
                   help="compile every program first on this many threads (default min(8, cores)); 0: each "
                        "compiles on its first call (then compile_s is per program)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes after the compiling one (median)")
    p.add_argument("--verify-repeats", type=int, default=3, dest="verify_repeats")
    p.add_argument("--gammas", type=int, nargs="*", default=[README_GAMMA, 4],
                   help="POST γ for the verification (default 8 4); none: skip")
    p.add_argument("--post-gamma", type=int, default=README_GAMMA, dest="post_gamma",
                   help=f"γ of the POST rows of the decode table (default {README_GAMMA})")
    p.add_argument("--tokens-per-step", type=float, default=README_TOKENS_PER_STEP, dest="tokens_per_step",
                   help=f"POST tokens per step for the projection (default {README_TOKENS_PER_STEP}: the README's "
                        f"end-to-end CPU measurement at γ = {README_GAMMA})")
    p.add_argument("--sections", default="forward,verify,decode,plain",
                   help="comma-separated subset of forward,verify,decode,plain (env always runs)")
    p.add_argument("--tag", default="", help="suffix of the JSON name: $OUT/gpu_check[_TAG].json")
    p.add_argument("--json", default=None, dest="json_path", help="JSON path (default $OUT/gpu_check[_TAG].json)")
    ARGS = p.parse_args(argv)
    if ARGS.platform == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif ARGS.platform == "gpu" and not os.environ.get("JAX_PLATFORMS"):
        os.environ["JAX_PLATFORMS"] = "cuda,cpu"
    if ARGS.json_path is None and os.environ.get("OUT"):
        ARGS.json_path = os.path.join(os.environ["OUT"], f"gpu_check{'_' + ARGS.tag if ARGS.tag else ''}.json")
    sections = set(ARGS.sections.split(","))
    say(f"# pspec GPU check ({'quick, tiny model' if ARGS.quick else 'SmolLM2-135M shape, random weights'})")
    import pspec_jax  # noqa: F401  (x64 before any jax use)

    env_section()
    if RESULT["errors"] and ARGS.platform == "gpu":
        say("stopping: no GPU")
        return 2
    try:
        cfg, params = build_model()
    except Exception as err:  # noqa: BLE001
        say(f"**model: FAILED {type(err).__name__}: {err}**")
        traceback.print_exc(file=sys.stderr)
        RESULT["errors"].append(f"model: {err}")
        save()
        return 1
    # Priority order (a timeout keeps what came first): phase A is what the decode table
    # needs (the T = 1 and T = γ+1 passes, the standard sampling step, POST's strict
    # verification at γ); phase B the rest.
    g = ARGS.post_gamma
    first_t = [T for T in ARGS.tokens if T in (1, g + 1)]
    cases = [(0, "sample"), *((x, "sample") for x in ARGS.gammas),
             (0, "greedy"), *((x, "greedy") for x in ARGS.gammas)]
    first_cases = [c for c in cases if c in ((0, "sample"), (g, "sample"))]
    if sections & {"forward", "decode"}:
        session_section(cfg, params)
    # Each phase's programs compile first, in parallel (--parallel-compile).
    fwd = bool(sections & {"forward", "decode"})
    ver = bool(sections & {"verify", "decode"})
    if ARGS.parallel_compile > 0:
        compile_section(cfg, first_t if fwd else [], first_cases if ver else [])
    if fwd:
        prefill_section(cfg)
        forward_section(first_t)
    if ver and first_cases:
        verify_section(cfg, first_cases)
    if "decode" in sections:
        decode_section()
    rest_t = [T for T in ARGS.tokens if T not in first_t] if "forward" in sections else []
    rest = [c for c in cases if c not in first_cases] if "verify" in sections else []
    if ARGS.parallel_compile > 0 and (rest_t or rest):
        compile_section(cfg, rest_t, rest)
    if rest_t:
        forward_section(rest_t)
    if rest:
        verify_section(cfg, rest)
        if "decode" in sections:
            decode_section()
    STATE.pop("session", None)  # frees the session's device memory before the plain model
    if "plain" in sections:
        plain_section(cfg, params)
    say(f"\ndone in {elapsed():.1f} s; {len(RESULT['errors'])} failure(s)"
        + (f"; JSON: {ARGS.json_path}" if ARGS.json_path else ""))
    save()
    return 0 if not RESULT["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
