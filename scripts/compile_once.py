#!/usr/bin/env python
"""Compile once: a real three-process session (dealer, server, client on loopback) on the
default models, run twice against one fresh persistent compilation cache — first cold
(every program compiles), then with new processes and the cache warm (every program is
loaded). Prints, per round, the seconds each party spent tracing, cutting and
compiling or loading its programs (the client's from `--json`, the server's from its
session log line), the client's first-step times and the wall time, and checks that both
rounds returned the same tokens.

    python scripts/compile_once.py [--mode post|secure] [--tokens 4] [--gamma 3] [--comparison kogge-stone|dcf]
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

PSPEC = [sys.executable, "-m", "pspec_jax.cli"]
PROMPT = "Tell me a story"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, log_path, env):
    log = open(log_path, "w")
    return subprocess.Popen(PSPEC + args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(path, pattern, proc, timeout=600.0) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = open(path).read()
        found = re.search(pattern, text)
        if found:
            return found
        if proc.poll() is not None:
            raise SystemExit(f"{path} exited:\n{text[-2000:]}")
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {pattern!r} in {path}")


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def session(tmp, round_, env, args) -> dict:
    dport, sport = free_port(), free_port()
    dlog, slog = f"{tmp}/dealer{round_}.log", f"{tmp}/server{round_}.log"
    dealer = start(["dealer", "--listen", f"127.0.0.1:{dport}"], dlog, env)
    server = start(["serve", "--listen", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}",
                    "--comparison", args.comparison], slog, env)
    try:
        wait_for(dlog, "listening", dealer)
        wait_for(slog, "listening", server)
        t0 = time.perf_counter()
        r = subprocess.run(PSPEC + ["generate", PROMPT, "--mode", args.mode, "--gamma", str(args.gamma),
                                    "--temperature", "0", "--max-new-tokens", str(args.tokens), "--ignore-eos",
                                    "--server", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}", "--json"],
                           capture_output=True, text=True, env=env, timeout=3600)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"client failed:\n{r.stderr[-3000:]}")
        out = json.loads(r.stdout)
        found = wait_for(slog, r"done, .*", server, timeout=60)
        compiling = re.search(r"\(([\d.]+) s compiling\)", found.group(0))
        return {"round": round_, "client_compile_s": out.get("compile_seconds", float("nan")),
                "server_compile_s": float(compiling.group(1)) if compiling else float("nan"),
                "prefill_s": out["prefill_seconds"], "first_step_s": out["first_step_seconds"],
                "wall_s": round(wall, 1), "tokens": out["tokens"]}
    finally:
        stop(server)
        stop(dealer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="post", choices=("post", "secure"))
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--gamma", type=int, default=3)
    parser.add_argument("--comparison", default="kogge-stone", choices=("kogge-stone", "dcf"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pspec-compile-") as tmp:
        env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=f"{tmp}/cache")
        env.pop("PSPEC_NO_JIT_CACHE", None)
        rows = [session(tmp, name, env, args) for name in ("cold", "warm")]
        entries = len(os.listdir(f"{tmp}/cache"))
    print(f"{args.mode}, {args.tokens} tokens, comparison {args.comparison}; cache entries after both rounds: "
          f"{entries}")
    print(f"{'round':<6} {'client compile s':>17} {'server compile s':>17} {'prefill s':>10} "
          f"{'first step s':>13} {'wall s':>8}")
    for r in rows:
        print(f"{r['round']:<6} {r['client_compile_s']:>17.1f} {r['server_compile_s']:>17.1f} {r['prefill_s']:>10.1f} "
              f"{r['first_step_s']:>13.1f} {r['wall_s']:>8.1f}")
    print("same tokens in both rounds:", rows[0]["tokens"] == rows[1]["tokens"])


if __name__ == "__main__":
    main()
