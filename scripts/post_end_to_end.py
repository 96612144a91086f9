#!/usr/bin/env python
"""POST vs standard secure decoding on the default pair, measured end to end in ONE
session (the README's headline speed-up): after compiling, two POST runs of 16 tokens at
γ = 8 and 8 tokens of standard secure decoding on the first held-out bench prompt,
temperature 1, strict privacy. Prints one JSON line: tokens, steps, tokens per step,
per-token compute / bytes / rounds / modelled lan and wan seconds of each, the speed-ups
and the verification's share of each POST run's modelled time. ~10 min on 2 cores.

    .venv/bin/python scripts/post_end_to_end.py
"""

import json

import pspec_jax  # noqa: F401  (x64 before any jax use)
from pspec_jax.benchmarks.decode import per_token, heldout_prompts, sum_reports
from pspec_jax.commands.generate import default_drafter
from pspec_jax.decode import Sampling
from pspec_jax.decode.post import generate_post
from pspec_jax.decode.secure import generate_secure
from pspec_jax.models import load_default_private
from pspec_jax.secure import SecureSession

GAMMA, POST_TOKENS, STD_TOKENS = 8, 16, 8


def main() -> None:
    private = load_default_private()
    drafter = default_drafter(private)
    ids = heldout_prompts(private.tokenizer, 2)[0]
    session = SecureSession(private.config, private.params, max_len=len(ids) + POST_TOKENS + GAMMA + 2)
    sampling = Sampling(1.0)
    # warm-up: compiles the prefill, the (γ+1)-token pass, the verification and the 1-token pass
    generate_post(private, drafter, ids, 1, GAMMA, sampling, "strict", session=session, seed=0)
    generate_secure(private, ids, 2, sampling, session=session)
    post = [generate_post(private, drafter, ids, POST_TOKENS, GAMMA, sampling, "strict", session=session, seed=i)
            for i in (1, 2)]
    std = generate_secure(private, ids, STD_TOKENS + 1, sampling, session=session)
    std_per_token = per_token(std.extra["decode"], len(std.tokens) - 1)  # the first token comes from the prefill
    tokens, steps = sum(len(r.tokens) for r in post), sum(r.steps for r in post)
    post_per_token = per_token(sum_reports([r.extra["decode"] for r in post]), tokens)
    print(json.dumps({"drafter": drafter.name, "gamma": GAMMA, "post_tokens": tokens, "steps": steps,
                      "tokens_per_step": tokens / steps, "post": post_per_token, "standard": std_per_token,
                      "speedup": {k: std_per_token[k] / post_per_token[k] for k in ("lan", "wan")},
                      "verify_share": [r.extra["verify_share"] for r in post]}))


if __name__ == "__main__":
    main()
