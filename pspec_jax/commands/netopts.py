"""Options every party process takes: addresses, TLS, emulated network, timeout."""

from __future__ import annotations

import argparse

from pspec_jax.errors import UserError


def address(text: str, what: str) -> tuple[str, int]:
    """HOST:PORT -> (host, port), one-line error otherwise."""
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"{what} must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def add_party_arguments(parser: argparse.ArgumentParser, dealer_link: bool = True) -> None:
    parser.add_argument("--tls", metavar="DIR", default=None,
                        help="certificates from `pspec keygen DIR` (mutual TLS 1.3); without it, "
                             "plaintext is allowed on loopback only")
    parser.add_argument("--emulate", default="none",
                        help="shape every message sent: lan, wan, dc, none, or custom:<Mbps>:<ms>")
    if dealer_link:
        parser.add_argument("--emulate-dealer", default=None, dest="emulate_dealer",
                            help="shape the messages sent to the dealer instead (default: as --emulate); "
                                 "e.g. none for a dealer next to this party")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for a peer's message before giving up (default 300)")


def party_options(args: argparse.Namespace, role: str):
    """(TlsConfig or None, NetworkEmulation or None for the links to the peer party,
    NetworkEmulation or None for the link to the dealer), checked."""
    from mpc.transport import NetworkEmulation, TlsConfig, TransportError

    if not args.timeout > 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    if not args.tls:  # one line, once, instead of the transport's warning at every link
        import sys
        import warnings

        from mpc.transport import PlaintextWarning

        warnings.simplefilter("ignore", PlaintextWarning)
        print(f"pspec {role}: warning: plaintext links without --tls, allowed on loopback only (tests, demos)",
              file=sys.stderr, flush=True)
    try:
        tls = TlsConfig.from_dir(args.tls, role) if args.tls else None
        shape = lambda spec: None if spec == "none" else NetworkEmulation.preset(spec)  # noqa: E731
        emulate = shape(args.emulate)
        dealer_spec = getattr(args, "emulate_dealer", None)
        emulate_dealer = emulate if dealer_spec is None else shape(dealer_spec)
    except (TransportError, ValueError, KeyError) as err:
        raise UserError(str(err).splitlines()[0] if str(err) else f"bad --emulate {args.emulate!r}") from None
    return tls, emulate, emulate_dealer
