#!/usr/bin/env python
"""Benchmark of the 2PC core (same as `pspec bench mpc`); pass `--json` for JSON."""

import sys

from pspec_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "mpc", *sys.argv[1:]]))
