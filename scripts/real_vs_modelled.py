"""Measured against modelled: standard secure decoding and POST (γ = 4, 8) of the default
SmolLM2 pair through three real processes (dealer, server, client) on loopback, with the
client–server link shaped by `--emulate none|lan|wan`, next to the cost model's estimate.

For each emulation the script starts a dealer and a server, runs one client session per
configuration (greedy, so every emulation decodes the same tokens with the same steps),
and stops them. Per configuration and emulation it reports the steady-state wall seconds
per token (after the first decode step, which compiles) and the modelled seconds per token:

    modelled(E) = measured(none) + network_E(ledger of the decode steps)

i.e. the compute and the loopback transport measured on real sockets without shaping, plus
rounds × one-way latency + bytes / bandwidth of preset E for exactly the messages the
steps sent (the ledger; the party processes' socket bytes equal it, tests/test_runtime).
The dealer sits next to both parties (its links are not shaped: `--emulate-dealer none`):
the dealer is online (one correction request per dealer-assisted operation), see README.

    .venv/bin/python scripts/real_vs_modelled.py [--emulate none lan wan] [--configs ...] [--out FILE]
        [--base EARLIER_OUT]   # e.g. `--emulate wan --base out/none_lan.json` adds wan later
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

PSPEC = [sys.executable, "-m", "pspec_jax.cli"]
PROMPT = "Write a short story about a robot who learns to paint."
CONFIGS = {"secure": ["--mode", "secure", "--max-new-tokens", "4"],
           "post-4": ["--mode", "post", "--gamma", "4", "--max-new-tokens", "12"],
           "post-8": ["--mode", "post", "--gamma", "8", "--max-new-tokens", "16"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(proc, log_path: str, timeout: float = 600.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if "listening on" in open(log_path).read():
            return
        if proc.poll() is not None:
            raise SystemExit(f"a party exited early: {open(log_path).read()[-2000:]}")
        time.sleep(0.5)
    raise SystemExit(f"no 'listening' line after {timeout} s: {open(log_path).read()[-2000:]}")


def steady(out: dict) -> dict:
    """Steady-state seconds per token (after the first decode step) and the modelled
    network seconds per steady token for each preset, from one client's --json."""
    tokens = len(out["tokens"])
    rest_tokens = tokens - out["first_step_tokens"]
    rest_s = out["seconds"] - out["first_step_seconds"]
    dec = out["decode"]
    steps = dec["secure_passes"] if out["mode"] == "secure" else out["steps"]
    net = {p: (s - dec["compute_s"]) / steps for p, s in dec["modeled_s"].items()}  # per decode step
    return {"tokens": tokens, "steady_tokens": rest_tokens, "steady_steps": steps - 1,
            "measured_s_per_token": rest_s / rest_tokens,
            "network_s_per_token": {p: v * (steps - 1) / rest_tokens for p, v in net.items()},
            "rounds_per_step": dec["rounds"] / steps, "bytes_per_step": dec["bytes_per_party"] / steps,
            "wall_s": out["wall_s"]}


def run_emulation(emulate: str, configs: list[str], keys: str, logs: str, private: list[str],
                  public: list[str], prompt: str = PROMPT) -> dict:
    dport, sport = free_port(), free_port()
    common = ["--tls", keys, "--timeout", "1800"]
    dlog, slog = os.path.join(logs, f"dealer-{emulate}.log"), os.path.join(logs, f"server-{emulate}.log")
    dealer = subprocess.Popen(PSPEC + ["dealer", "--listen", f"127.0.0.1:{dport}", *common],
                              stdout=open(dlog, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = subprocess.Popen(PSPEC + ["serve", "--listen", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}",
                                       "--emulate", emulate, "--emulate-dealer", "none",
                                       "--sessions", str(len(configs)), *private, *common],
                              stdout=open(slog, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    results = {}
    try:
        wait_listening(dealer, dlog)
        wait_listening(server, slog)
        for name in configs:
            t0 = time.time()
            r = subprocess.run(PSPEC + ["generate", prompt, *CONFIGS[name], "--temperature", "0", "--ignore-eos",
                                        "--server", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}",
                                        "--emulate", emulate, "--emulate-dealer", "none", "--json", *private,
                                        *(public if name.startswith("post") else []), *common],
                               capture_output=True, text=True, timeout=7200)
            if r.returncode != 0:
                raise SystemExit(f"{name} over {emulate} failed: {r.stderr[-2000:]}")
            out = json.loads(r.stdout)
            results[name] = {**steady(out), "token_ids": out["tokens"], "session_s": round(time.time() - t0, 1)}
            print(f"[{emulate}] {name}: {json.dumps({k: v for k, v in results[name].items() if k != 'token_ids'})}",
                  file=sys.stderr, flush=True)
    finally:
        for p in (server, dealer):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait(10)
    return results


def table(runs: dict) -> list[dict]:
    rows = []
    base = runs.get("none", {})
    for emulate, results in runs.items():
        for name, r in results.items():
            row = {"config": name, "emulate": emulate, "measured_s_per_token": round(r["measured_s_per_token"], 3)}
            if emulate != "none" and name in base:
                model = base[name]["measured_s_per_token"] + r["network_s_per_token"][emulate]
                row.update(modelled_s_per_token=round(model, 3),
                           measured_over_modelled=round(r["measured_s_per_token"] / model, 3))
            if name != "secure" and "secure" in results:
                row["speedup_measured"] = round(results["secure"]["measured_s_per_token"] / r["measured_s_per_token"], 3)
            rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate", nargs="+", default=["none", "lan", "wan"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--out", default="out/real_vs_modelled.json")
    ap.add_argument("--private", default=None, help="the private model (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--public", default=None, help="the drafter (default: the distilled one)")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--base", default=None,
                    help="an earlier --out file whose runs (e.g. `none`) join this one's table")
    args = ap.parse_args()
    private = ["--private", args.private] if args.private else []
    public = ["--public", args.public] if args.public else []
    runs = json.load(open(args.base))["runs"] if args.base else {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = os.path.join(tmp, "keys")
        subprocess.run(PSPEC + ["keygen", keys], check=True, capture_output=True)
        logs = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(logs, exist_ok=True)
        for emulate in args.emulate:
            runs[emulate] = run_emulation(emulate, args.configs, keys, logs, private, public, args.prompt)
            json.dump({"runs": runs, "table": table(runs)}, open(args.out, "w"), indent=1)
    from pspec_jax.benchmarks.table import format_table

    print(format_table(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
