"""`pspec demo` (what `make demo` runs): the default pair in `spec` mode on a short
prompt, fetching the models on first use; prints the text and α."""

from __future__ import annotations

import argparse

DEFAULT_PROMPT = "Once upon a time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48, dest="max_new_tokens")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 = greedy (default); speculative output equals plain greedy")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import pspec_jax  # noqa: F401
    from pspec_jax.decode import Sampling, generate_plain, generate_spec
    from pspec_jax.decode.common import enable_compilation_cache
    from pspec_jax.errors import UserError
    from pspec_jax.commands.generate import default_drafter
    from pspec_jax.models import load_default_private

    if args.gamma < 1:
        raise UserError(f"--gamma must be >= 1, got {args.gamma}")
    enable_compilation_cache()
    private = load_default_private()
    drafter = default_drafter(private)
    tok = private.tokenizer
    ids = list(tok(args.prompt)["input_ids"])
    sampling = Sampling(args.temperature)
    kind = ("distilled" if drafter.name == "distilled-drafter"
            else "untrained truncation; `pspec distill` aligns one")
    print(f"private: SmolLM2-135M-Instruct ({private.config.n_layers} layers); drafter: "
          f"{drafter.name}, {drafter.config.n_layers} layers ({kind}); γ={args.gamma}, "
          f"temperature {args.temperature}")
    res = generate_spec(private, drafter, ids, args.max_new_tokens, args.gamma, sampling,
                        args.seed, tok.eos_token_id)
    text = tok.decode(res.tokens, skip_special_tokens=True)
    print(f"\n{args.prompt}{text}\n")
    print(f"spec: {len(res.tokens)} tokens, {res.steps} steps, "
          f"{res.tokens_per_step:.2f} tokens/step, α = {res.alpha:.3f} "
          f"(acceptance {res.acceptance_rate:.3f}), {res.tokens_per_second:.1f} tok/s")
    if sampling.greedy:
        ref = generate_plain(private, ids, args.max_new_tokens, sampling, args.seed, tok.eos_token_id)
        same = ref.tokens == res.tokens
        print(f"plain greedy gives the {'same' if same else 'DIFFERENT'} tokens "
              f"({ref.tokens_per_second:.1f} tok/s)")
    return 0
