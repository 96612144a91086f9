"""The transport's errors: one base class, each with a one-line message naming the peer."""

from __future__ import annotations


class TransportError(Exception):
    """Anything that went wrong on a link; the message is one line, fit for a user."""


class PeerTimeout(TransportError):
    """The peer sent nothing (or read nothing of ours) for the link's timeout."""


class PeerGone(TransportError):
    """The peer closed the session, or the connection broke (killed, reset, cut mid-frame)."""


class FrameError(TransportError):
    """A frame broke the format: bad magic, wrong session or counter, a dtype or size
    outside the limits. The stream is out of step afterwards, so the link is unusable."""


class HandshakeError(TransportError):
    """The peer is not the one expected: TLS or certificate failure, another role,
    protocol version, session id or model fingerprint."""


class TlsConfigError(TransportError):
    """Missing, corrupt or inconsistent key/certificate files."""


class InsecureLinkError(TransportError):
    """A plaintext link was asked for between non-loopback addresses."""


class PlaintextWarning(UserWarning):
    """Issued once per plaintext (loopback-only, test) link."""
