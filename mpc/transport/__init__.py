"""The transport of real runs: framed numpy messages over mutually authenticated TLS 1.3.

Knows nothing of protocols or models (numpy, the standard library and `cryptography`).

  errors  TransportError and its kinds (PeerTimeout, PeerGone, FrameError, HandshakeError, ...)
  frames  the binary message format (layout and overhead formula in its docstring)
  wire    bytes over one socket, plain or TLS, with timeouts and exact byte counts
  tls     `pspec keygen`'s CA and role certificates; TlsConfig
  link       Link (send / recv / exchange / flush / close) and LinkStats
  handshake  connect, listen / Listener.accept: address checks, TLS, hello and verdict
  emulation  NetworkEmulation: sender-side delays with the ledger's network presets

Per message the wire carries payload + 48 + sum_i (10 + 8 * ndim_i) framing bytes, and
under TLS 22 more bytes per TLS record (at most 16 KiB of plaintext each; the exact
count is in `LinkStats.bytes_wire_sent`).
"""

from mpc.transport.errors import (FrameError, HandshakeError, InsecureLinkError, PeerGone, PeerTimeout,
                                  PlaintextWarning, TlsConfigError, TransportError)
from mpc.transport.frames import DEFAULT_MAX_MESSAGE_BYTES
from mpc.transport.emulation import PRESETS, NetworkEmulation
from mpc.transport.handshake import Listener, connect, listen
from mpc.transport.link import Link, LinkStats
from mpc.transport.tls import ROLES, TlsConfig, write_keys

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "FrameError", "HandshakeError", "InsecureLinkError", "Link", "LinkStats",
           "Listener", "NetworkEmulation", "PRESETS", "PeerGone", "PeerTimeout", "PlaintextWarning", "ROLES",
           "TlsConfig", "TlsConfigError", "TransportError", "connect", "listen", "write_keys"]
