"""`pspec serve --listen HOST:PORT --dealer HOST:PORT [--private PATH]`: the server
process. It holds the private model and serves client sessions one after another; a
client that fails ends only its own session. One log line per session, nothing secret."""

from __future__ import annotations

import argparse
import logging
import sys

from pspec_jax.commands import enable_compilation_cache
from pspec_jax.commands.netopts import add_party_arguments, address, party_options
from pspec_jax.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where clients connect")
    parser.add_argument("--dealer", required=True, metavar="HOST:PORT", help="the dealer's address")
    parser.add_argument("--private", metavar="MODEL", default=None,
                        help="the private model: DEFAULT (the fine-tune), base, or an HF folder / GGUF")
    parser.add_argument("--max-len", type=int, default=2048, dest="max_len",
                        help="the largest KV cache a client may ask for (default 2048)")
    parser.add_argument("--comparison", choices=["kogge-stone", "dcf"], default="kogge-stone",
                        help="how comparisons run in every session: kogge-stone (default: more rounds, little "
                             "dealer data) or dcf (one round each; dealer keys of ~0.3-1 KB per compared value)")
    parser.add_argument("--sessions", type=int, default=None,
                        help="stop after this many sessions (default: serve forever)")
    add_party_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mpc.transport import TransportError, listen
    from pspec_jax.commands.generate import load_private
    from pspec_jax.runtime.server import run_server
    from pspec_jax.runtime.session import SessionTerms

    host, port = address(args.listen, "--listen")
    enable_compilation_cache()
    dealer = address(args.dealer, "--dealer")
    tls, emulate, emulate_dealer = party_options(args, "server")
    if args.max_len < 1 or (args.sessions is not None and args.sessions < 1):
        raise UserError("--max-len and --sessions must be >= 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pspec").setLevel(logging.INFO)  # our one line per session; libraries stay quiet
    private = load_private(args)
    from pspec_jax.secure.ranges import calibration_ids, measure

    terms = SessionTerms(measure(private.config, private.params, calibration_ids(private.config, private.tokenizer)),
                         args.comparison)
    try:
        listener = listen(host, port, role="server", tls=tls)
    except (OSError, TransportError) as err:
        raise UserError(f"cannot listen on {args.listen}: {err}") from None
    print(f"pspec serve: listening on {listener.host}:{listener.port}", file=sys.stderr, flush=True)
    run_server(listener, dealer, private.config, private.params, terms, tls=tls, dealer_tls=tls, timeout_s=args.timeout,
               max_len=min(args.max_len, private.config.max_seq_len), emulate=emulate, emulate_dealer=emulate_dealer,
               max_sessions=args.sessions)
    return 0
