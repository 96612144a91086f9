"""`pspec demo` (what `make demo` runs): the main job on the default pair.

By default private speculative decoding (`--mode post`): the client drafts with the
distilled public drafter in the clear, SmolLM2-135M-Instruct verifies the drafts under
2PC, one secure pass per step, and the tokens come out of the secure sampling protocol.
It streams the text, prints the cost table of the secure passes (bytes, rounds, compute,
modelled network time), and at temperature 0 checks the output against the private
model's plain greedy decoding in the clear. The first run compiles the secure programs
(a few minutes on 2 cores). `--mode spec` is the same pair in the clear (seconds).
"""

from __future__ import annotations

import argparse

DEFAULT_PROMPT = "Once upon a time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--mode", default="post", choices=("post", "spec"),
                        help="post: private speculative decoding under 2PC (default); "
                             "spec: the same pair in the clear")
    parser.add_argument("--gamma", type=int, default=4, help="drafts per step (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=24, dest="max_new_tokens")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 = greedy (default): the output must equal plain greedy decoding")
    parser.add_argument("--network", default=None,
                        help="network preset of the cost table, post mode (lan, wan, dc; default wan)")
    parser.add_argument("--seed", type=int, default=None,
                        help="reproduce a run; without it the client's randomness comes from "
                             "os.urandom (a seeded run is not private)")


def run(args: argparse.Namespace) -> int:
    from pspec_jax.commands import generate as G

    gen = argparse.ArgumentParser()
    G.add_arguments(gen)
    argv = [args.prompt, "--mode", args.mode, "--gamma", str(args.gamma),
            "--max-new-tokens", str(args.max_new_tokens), "--temperature", str(args.temperature)]
    if args.mode == "post" or args.network is not None:  # spec refuses --network
        argv += ["--network", args.network or "wan"]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    gen_args = gen.parse_args(argv)
    what = ("private speculative decoding under 2PC (POST); the first run compiles the secure "
            "programs, a few minutes on 2 cores" if args.mode == "post" else "speculative decoding in the clear")
    print(f"pspec demo: {what}\nprompt: {args.prompt!r}", flush=True)
    res, req = G.generate(gen_args)
    drafter = req.drafter()
    print(f"private model {req.private.name} ({req.private.config.n_layers} layers), drafter "
          f"{drafter.name} ({drafter.config.n_layers} layers), γ={args.gamma}, temperature {args.temperature}", flush=True)
    if args.mode == "post":
        print(f"{len(res.tokens)} tokens from {res.steps} secure verification passes (+1 prefill); "
              f"standard secure decoding needs one pass per token", flush=True)
    if req.sampling.greedy:
        from pspec_jax.decode import generate_plain

        ref = generate_plain(req.private, req.prompt_ids, args.max_new_tokens, req.sampling,
                             args.seed, req.eos_id)
        same = ref.tokens == res.tokens
        print(f"plain greedy decoding of the private model in the clear gives the "
              f"{'same tokens' if same else 'DIFFERENT tokens'}")
        return 0 if same else 1
    return 0
