"""The `pspec` command.

Each subcommand lives in its own module under `pspec_jax.commands` and exposes
`add_arguments(parser)` and `run(args) -> int`. Modules are imported lazily so that
`pspec --help` stays fast and a broken optional part cannot break the others.

Errors a user can cause (bad paths, bad options, corrupt files, a lost peer) are raised
as `UserError` and printed as one line with exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pspec_jax.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("pspec_jax.commands.bench", "benchmarks: mpc protocols, secure forward, decoding"),
    "demo": ("pspec_jax.commands.demo", "the main job on the default models (what `make demo` runs)"),
    "fetch": ("pspec_jax.commands.fetch", "download and convert the default models"),
    "generate": ("pspec_jax.commands.generate", "generate text: plain, spec, secure or post"),
    "distill": ("pspec_jax.commands.distill", "align a drafter with the private model"),
    "eval-acceptance": ("pspec_jax.commands.eval_acceptance", "measure a drafter's acceptance rate"),
    "serve": ("pspec_jax.commands.serve", "the server process: holds the private model, serves sessions"),
    "dealer": ("pspec_jax.commands.dealer", "the dealer process: correlated randomness for sessions"),
    "keygen": ("pspec_jax.commands.keygen", "write a CA and TLS keys for the client, server and dealer"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line (its default prints usage too)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        sys.stderr.write(f"pspec: error: {message}\n")
        raise SystemExit(2)


def _available() -> dict[str, tuple[str, str]]:
    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pspec", description="Private speculative decoding in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module, help_) in _available().items():
        sp = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UserError as err:
        sys.stderr.write(f"pspec: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("pspec: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
