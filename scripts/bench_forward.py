#!/usr/bin/env python
"""One secure pass of SmolLM2 over T = 1, 2, 4, 8, 16 new tokens at a context of 64 (same
as `pspec bench forward`): compute, bytes, rounds, modelled lan/wan seconds and each as a
ratio to T = 1; a table and out/forward_cost.png."""

import sys

from pspec_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "forward", *sys.argv[1:]]))
