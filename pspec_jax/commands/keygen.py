"""`pspec keygen DIR`: a private CA plus a key and certificate for each role (client,
server, dealer), for the mutually authenticated TLS 1.3 links of real runs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder to write ca.pem/.key and <role>.pem/.key into")
    parser.add_argument("--force", action="store_true", help="replace keys already in DIR")
    parser.add_argument("--days", type=int, default=825, help="validity of the certificates (default 825)")


def run(args: argparse.Namespace) -> int:
    from mpc.transport import TlsConfigError, write_keys
    from pspec_jax.errors import UserError

    if args.days < 1:
        raise UserError(f"--days must be at least 1, got {args.days}")
    try:
        paths = write_keys(args.dir, force=args.force, days=args.days)
    except TlsConfigError as err:
        raise UserError(str(err)) from None
    print(f"wrote {len(paths)} files to {args.dir}: " + " ".join(p.name for p in paths))
    print("give each party ca.pem and its own <role>.pem and <role>.key; keep ca.key offline")
    return 0
