#!/usr/bin/env python
"""POST vs standard secure decoding on the default pair (same as `pspec bench decode`):
tokens, secure passes, α, tokens per step, compute, bytes, rounds, modelled seconds and
the speed-up per γ on the lan and wan presets, a table and out/decode_speedup.png.
Takes about an hour on 2 CPU cores; `--quick`, `--gammas`, `--tokens`, `--prompts`
shrink it; `--reuse-secure` re-projects a new drafter from the saved secure runs."""

import sys

from pspec_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "decode", *sys.argv[1:]]))
