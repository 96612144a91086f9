"""`pspec demo` (what `make demo` runs): the main job on the default pair.

By default private speculative decoding (`--mode post`) as a real run: the dealer
(`pspec dealer`) and the server (`pspec serve`, holding SmolLM2-135M-Instruct) start as
two processes on loopback, and this process is the client: it drafts with the distilled
public drafter in the clear, the server verifies the drafts under 2PC, one secure pass
per step, and the tokens come out of the secure sampling protocol. `--simulate` runs
both parties in this one process instead (the simulation).
It streams the text, prints the cost table of the secure passes (bytes, rounds, compute,
modelled network time), and at temperature 0 checks the output against the private
model's plain greedy decoding in the clear. The first run compiles the secure programs
(a few minutes on 2 cores). `--mode spec` is the same pair in the clear (seconds).
"""

from __future__ import annotations

import argparse
import contextlib

DEFAULT_PROMPT = "Once upon a time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--mode", default="post", choices=("post", "spec"),
                        help="post: private speculative decoding under 2PC (default); "
                             "spec: the same pair in the clear")
    parser.add_argument("--gamma", type=int, default=None, help="drafts per step, a chain (default 4)")
    parser.add_argument("--tree", type=int, default=None, metavar="N",
                        help="draft a token tree of N nodes per step (the public shape for N) instead")
    parser.add_argument("--max-new-tokens", type=int, default=24, dest="max_new_tokens")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 = greedy (default): the output must equal plain greedy decoding")
    parser.add_argument("--network", default=None,
                        help="network preset of the cost table, post mode (lan, wan, dc; default wan)")
    parser.add_argument("--simulate", action="store_true",
                        help="post mode: both parties in this process instead of three processes")
    parser.add_argument("--emulate", default="none",
                        help="post mode, real run: shape every message (lan, wan, dc, none)")
    parser.add_argument("--seed", type=int, default=None,
                        help="reproduce a run; without it the client's randomness comes from "
                             "os.urandom (a seeded run is not private)")


def run(args: argparse.Namespace) -> int:
    from pspec_jax.commands import generate as G

    gen = argparse.ArgumentParser()
    G.add_arguments(gen)
    if args.tree is not None and args.gamma is not None:
        from pspec_jax.errors import UserError

        raise UserError("give either --gamma (a chain of drafts) or --tree N (a token tree), not both")
    drafts = ["--tree", str(args.tree)] if args.tree is not None else ["--gamma", str(args.gamma or 4)]
    argv = [args.prompt, "--mode", args.mode, *drafts,
            "--max-new-tokens", str(args.max_new_tokens), "--temperature", str(args.temperature)]
    if args.mode == "post" or args.network is not None:  # spec refuses --network
        argv += ["--network", args.network or "wan"]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    real = args.mode == "post" and not args.simulate
    what = ("private speculative decoding under 2PC (POST); the first run compiles the secure "
            "programs, a few minutes on 2 cores" if args.mode == "post" else "speculative decoding in the clear")
    print(f"pspec demo: {what}\nprompt: {args.prompt!r}", flush=True)
    if not real:
        res, req = G.generate(gen.parse_args(argv))
    else:
        with local_parties(args.emulate) as (server, dealer):
            print(f"dealer and server processes on {dealer} and {server} (loopback); this process is the client",
                  flush=True)
            res, req = G.generate(gen.parse_args(argv + ["--server", server, "--dealer", dealer,
                                                         "--emulate", args.emulate, "--timeout", "900"]))
    drafter = req.drafter()
    print(f"private model {req.private.name} ({req.private.config.n_layers} layers), drafter "
          f"{drafter.name} ({drafter.config.n_layers} layers), "
          f"{f'tree of {args.tree} nodes' if args.tree is not None else f'γ={args.gamma or 4}'}, "
          f"temperature {args.temperature}", flush=True)
    if args.mode == "post":
        print(f"{len(res.tokens)} tokens from {res.steps} secure verification passes (+1 prefill); "
              f"standard secure decoding needs one pass per token", flush=True)
    if req.sampling.greedy:
        from pspec_jax.decode import generate_plain

        # The demo plays all three roles: only this check loads the private weights here.
        private = G.load_private(gen.parse_args(argv)) if real else req.private
        ref = generate_plain(private, req.prompt_ids, args.max_new_tokens, req.sampling,
                             args.seed, req.eos_id)
        same = ref.tokens == res.tokens
        print(f"plain greedy decoding of the private model in the clear gives the "
              f"{'same tokens' if same else 'DIFFERENT tokens'}")
        return 0 if same else 1
    return 0


@contextlib.contextmanager
def local_parties(emulate: str):
    """Start `pspec dealer` and `pspec serve` on free loopback ports; stop them on exit.
    Their logs go to stderr (one line per session, nothing secret)."""
    import socket
    import subprocess
    import sys
    import time

    from pspec_jax.errors import UserError

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    dport, sport = port(), port()
    cmd = [sys.executable, "-m", "pspec_jax.cli"]
    procs = [subprocess.Popen(cmd + ["dealer", "--listen", f"127.0.0.1:{dport}", "--emulate", emulate]),
             subprocess.Popen(cmd + ["serve", "--listen", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}",
                                     "--emulate", emulate, "--timeout", "900", "--sessions", "1"])]
    try:
        for p, port_ in zip(procs, (dport, sport)):
            t0 = time.time()
            while True:  # until the process accepts connections (the server loads its model first)
                if p.poll() is not None:
                    raise UserError("a demo party process exited before it started listening")
                try:
                    socket.create_connection(("127.0.0.1", port_), timeout=1).close()
                    break
                except OSError:
                    if time.time() - t0 > 300:
                        raise UserError("a demo party process did not start listening within 300 s") from None
                    time.sleep(0.5)
        yield f"127.0.0.1:{sport}", f"127.0.0.1:{dport}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
