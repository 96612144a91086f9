"""`pspec dealer --listen HOST:PORT`: the dealer process (correlated randomness for
client–server sessions; it never sees a prompt, a weight or an output)."""

from __future__ import annotations

import argparse
import logging
import sys

from pspec_jax.commands import enable_compilation_cache
from pspec_jax.commands.netopts import add_party_arguments, address, party_options
from pspec_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where parties connect")
    add_party_arguments(parser, dealer_link=False)


def run(args: argparse.Namespace) -> int:
    from mpc.transport import TransportError, listen
    from pspec_jax.runtime.dealer import run_dealer

    host, port = address(args.listen, "--listen")
    enable_compilation_cache()
    tls, emulate, _ = party_options(args, "dealer")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pspec").setLevel(logging.INFO)  # our one line per session; libraries stay quiet
    try:
        listener = listen(host, port, role="dealer", tls=tls)
    except (OSError, TransportError) as err:
        raise UserError(f"cannot listen on {args.listen}: {err}") from None
    print(f"pspec dealer: listening on {listener.host}:{listener.port}", file=sys.stderr, flush=True)
    run_dealer(listener, tls=tls, timeout_s=max(args.timeout, 3600.0), emulate=emulate)
    return 0
