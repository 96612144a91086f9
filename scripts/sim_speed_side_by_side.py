"""Side-by-side speed of the simulated secure pass in two checkouts (e.g. before/after a
refactor): one fresh process per (checkout, round), run ALTERNATELY (A, B, A, B, ...) so
that a shared machine's load hits both alike.

Each worker loads the default private model (SmolLM2-135M), builds a SecureSession and,
for every T, runs one compiling pass (its seconds are reported as `first_s`) and
`--repeats` timed passes at a fixed context, exactly as `pspec bench forward` does. It
also times each pass's process CPU seconds (all threads; less sensitive than wall time to
other load on a shared machine) and prints the online/setup/dealer ledger totals of one pass and the online ledger by
leaf op, so rounds and bytes can be compared between the checkouts.

    python scripts/sim_speed_side_by_side.py --a /work/wt-old --b /work/wt-new \
        --rounds 3 --tokens 1 8 --repeats 3 --json out/side_by_side.json

Each worker runs with PYTHONPATH=<checkout>, cwd=<checkout>, MALLOC_ARENA_MAX=2 and no
persistent compilation cache; the worker code uses only APIs present in both checkouts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import json, os, statistics, sys, time
import jax.numpy as jnp
import mpc
from pspec_jax.models import load_default_private
from pspec_jax.secure import SecureSession

tokens = [int(t) for t in sys.argv[1].split(",")]
repeats, context = int(sys.argv[2]), int(sys.argv[3])
load0 = os.getloadavg()
t0 = time.perf_counter()
bundle = load_default_private(fetch=False)
session = SecureSession(bundle.config, bundle.params, max_len=context + max(tokens))
out = {"mpc": mpc.__file__, "load_s": time.perf_counter() - t0, "T": {}}
for T in tokens:
    ids = jnp.arange(T, dtype=jnp.int32) % bundle.config.vocab_size
    first, times, cpu = 0.0, [], []
    for i in range(repeats + 1):
        session.rollback(0)
        session.cache = session.cache.rollback(context)
        mark = session.ledger.snapshot()
        t, c = time.perf_counter(), time.process_time()
        session.forward(ids)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if i:
            times.append(dt)
            cpu.append(dc)
        else:
            first = dt
    one = session.ledger.since(mark)
    tot = {k: vars(one.totals(k)) for k in ("online", "setup", "dealer")}
    by_leaf = {op: [v.bytes0, v.bytes1, v.rounds, v.messages] for op, v in one.by_op(leaf=True).items()}
    out["T"][str(T)] = {"first_s": first, "times": times, "median_s": statistics.median(times),
                        "cpu_times": cpu, "median_cpu_s": statistics.median(cpu),
                        "totals": tot, "by_leaf": by_leaf}
out["loadavg_start"], out["loadavg_end"] = load0, os.getloadavg()
print("RESULT " + json.dumps(out))
"""


def run_worker(tree: str, tokens: list[int], repeats: int, context: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, MALLOC_ARENA_MAX="2", PSPEC_NO_JIT_CACHE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WORKER, ",".join(map(str, tokens)), str(repeats), str(context)],
                       cwd=tree, env=env, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"worker in {tree} failed ({p.returncode})")
    line = next(l for l in p.stdout.splitlines() if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="baseline checkout (e.g. the commit before the change)")
    ap.add_argument("--b", required=True, help="checkout under test")
    ap.add_argument("--rounds", type=int, default=3, help="processes per checkout, alternating")
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per T per process")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--json", help="write all raw results here")
    args = ap.parse_args()

    runs: dict[str, list[dict]] = {"a": [], "b": []}
    for r in range(args.rounds):
        for key in ("a", "b"):
            tree = getattr(args, key)
            res = run_worker(tree, args.tokens, args.repeats, args.context)
            runs[key].append(res)
            per_t = "  ".join(f"T={T}: first {v['first_s']:.1f}s, passes "
                              + ",".join(f"{x:.2f}" for x in v["times"])
                              + " (cpu " + ",".join(f"{x:.1f}" for x in v["cpu_times"]) + ")" for T, v in res["T"].items())
            print(f"[round {r + 1} {key}] {tree}: {per_t}  (load {res['loadavg_start'][0]:.2f}"
                  f"->{res['loadavg_end'][0]:.2f}, wall {res['wall_s']:.0f}s)", flush=True)

    print()
    print("| T | median compute s/pass A | B | B/A | median CPU s/pass A | B | B/A | "
          "first (compile) pass s A | B | online rounds A | B | bytes/party A | B |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for T in map(str, args.tokens):
        med = {k: statistics.median(x for res in runs[k] for x in res["T"][T]["times"]) for k in runs}
        cpu = {k: statistics.median(x for res in runs[k] for x in res["T"][T]["cpu_times"]) for k in runs}
        first = {k: statistics.median(res["T"][T]["first_s"] for res in runs[k]) for k in runs}
        tot = {k: runs[k][0]["T"][T]["totals"]["online"] for k in runs}
        bpp = {k: max(tot[k]["bytes0"], tot[k]["bytes1"]) for k in runs}
        print(f"| {T} | {med['a']:.3f} | {med['b']:.3f} | {med['b'] / med['a']:.3f} | {cpu['a']:.2f} | {cpu['b']:.2f} | "
              f"{cpu['b'] / cpu['a']:.3f} | {first['a']:.1f} | "
              f"{first['b']:.1f} | {tot['a']['rounds']} | {tot['b']['rounds']} | {bpp['a']:,} | {bpp['b']:,} |")
    print()
    for T in map(str, args.tokens):
        la, lb = runs["a"][0]["T"][T]["by_leaf"], runs["b"][0]["T"][T]["by_leaf"]
        diff = {op: (la.get(op), lb.get(op)) for op in sorted(set(la) | set(lb)) if la.get(op) != lb.get(op)}
        for kind in ("online", "setup", "dealer"):
            ta, tb = runs["a"][0]["T"][T]["totals"][kind], runs["b"][0]["T"][T]["totals"][kind]
            if ta != tb:
                print(f"T={T} {kind} totals differ: A {ta}  B {tb}")
        print(f"T={T}: {len(diff)} leaf ops differ in [bytes0, bytes1, rounds, messages] (A -> B)")
        for op, (a, b) in diff.items():
            print(f"    {op}: {a} -> {b}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
