"""Setting a link up: address checks, `connect`, `listen`/`Listener.accept`, handshake.

Both ends run the same handshake: TLS 1.3 with certificates required both ways (unless
plaintext on loopback), the peer's certificate must name an expected role; then one
hello frame each way (role, protocol version, session id, model fingerprint) and one
verdict frame each way ("" or the reason for refusing), so that both ends fail with
the reason when either refuses. Emulated delays apply to data messages only.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import warnings
from typing import Sequence

import numpy as np

from mpc.transport.emulation import NetworkEmulation
from mpc.transport.errors import (FrameError, HandshakeError, InsecureLinkError, PeerGone, PeerTimeout,
                                  PlaintextWarning, TransportError)
from mpc.transport.frames import DEFAULT_MAX_MESSAGE_BYTES, HELLO, KIND_NAMES, SESSION_ID_BYTES, encode, read_message
from mpc.transport.link import Link, frame_pieces
from mpc.transport.tls import ROLES, TlsConfig, peer_role as cert_peer_role
from mpc.transport.wire import PlainWire, TlsWire, Wire

PLAINTEXT_WARNING = "plaintext link on loopback (no TLS): for tests only"
_HELLO_LIMIT = 64 << 10  # a hello carries three short strings


def _is_loopback(host: str, port: int = 0) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _check_plaintext(tls: TlsConfig | None, *hosts: str) -> None:
    if tls is not None:
        return
    for host in hosts:
        if not _is_loopback(host):
            raise InsecureLinkError(f"plaintext link to/from {host} refused: plaintext is for loopback only; "
                                    f"pass TLS keys (pspec keygen)")
    warnings.warn(PLAINTEXT_WARNING, PlaintextWarning, stacklevel=3)


def _roles(peer_role: str | Sequence[str]) -> tuple[str, ...]:
    roles = (peer_role,) if isinstance(peer_role, str) else tuple(peer_role)
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"unknown peer role {bad or roles!r}: use one of {', '.join(ROLES)}")
    return roles


def _check_args(role: str, tls: TlsConfig | None, session_id: bytes, timeout_s: float) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if tls is not None and tls.role != role:
        raise ValueError(f"TLS keys of the {tls.role} used for the {role}")
    if session_id is not None and (not isinstance(session_id, (bytes, bytearray))
                                   or len(session_id) != SESSION_ID_BYTES):
        raise ValueError(f"session_id must be {SESSION_ID_BYTES} bytes")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


def _read_hello(wire: Wire, peer: str, counter: int):
    try:
        msg = read_message(wire.read_into, peer=peer, session_id=None, counter=counter,
                           max_message_bytes=_HELLO_LIMIT)
    except (FrameError, PeerGone) as err:
        raise HandshakeError(f"handshake with {peer} failed: {err}") from None
    if msg.kind != HELLO:
        raise HandshakeError(f"{peer} sent a {KIND_NAMES[msg.kind]} frame instead of its handshake")
    return msg


def _judge_hello(msg, *, role: str, expected: tuple[str, ...], cert_role: str | None, session_id: bytes,
                 version: str, fingerprint: str) -> tuple[str, str | None]:
    """(the peer's role, what is wrong with its hello or None)."""
    peer = " or ".join(expected)
    if len(msg.arrays) != 3 or any(a.dtype != np.uint8 for a in msg.arrays):
        return peer, f"{peer} did not send a hello"
    try:
        their_role, their_version, their_fp = (bytes(a).decode() for a in msg.arrays)
    except UnicodeDecodeError:
        return peer, f"{peer} sent a hello that is not UTF-8"
    if their_role not in expected:
        return peer, f"{role} expected the {peer}, but the peer says it is {their_role!r}"
    if cert_role is not None and cert_role != their_role:
        return their_role, f"the peer's certificate names the {cert_role}, but it says it is the {their_role}"
    if their_version != version:
        return their_role, f"{their_role} speaks protocol {their_version}, {role} {version}"
    if msg.session_id != session_id:
        return their_role, f"{their_role} is in session {msg.session_id.hex()}, {role} in {session_id.hex()}"
    if their_fp != fingerprint:
        return their_role, f"model fingerprints differ: {their_role} has {their_fp[:80]}, {role} {fingerprint[:80]}"
    return their_role, None


def _handshake(sock: socket.socket, *, server_side: bool, role: str, expected: tuple[str, ...],
               tls: TlsConfig | None, session_id: bytes, version: str, fingerprint: str, timeout_s: float,
               emulate: NetworkEmulation | None, max_message_bytes: int) -> Link:
    """TLS (certificate naming an expected role), then a hello each way (role, protocol
    version, session id, model fingerprint), then each side's verdict on the other's."""
    peer = " or ".join(expected)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small rounds must not wait for Nagle
    try:
        if tls is not None:
            wire: Wire = TlsWire(sock, peer, timeout_s, tls.context(server_side), server_side)
            wire.handshake()
            try:
                cert_role, cert_problem = cert_peer_role(wire.peer_certificate(), expected, peer), None
            except HandshakeError as err:  # told to the peer in our verdict below
                cert_role, cert_problem = None, str(err)
        else:
            wire, cert_role, cert_problem = PlainWire(sock, peer, timeout_s), None, None
        msg = None
        if session_id is None:  # an accepting side that serves any session adopts the dialler's id
            msg = _read_hello(wire, peer, counter=0)
            session_id = msg.session_id
        hello = encode(HELLO, bytes(session_id), 0, [_text(role), _text(version), _text(fingerprint)])
        wire.write(b"".join(frame_pieces(hello)))
        if msg is None:
            msg = _read_hello(wire, peer, counter=0)
        their_role, problem = _judge_hello(msg, role=role, expected=expected, cert_role=cert_role,
                                           session_id=bytes(session_id), version=version, fingerprint=fingerprint)
        problem = cert_problem or problem
        # Second step: each side tells the other its verdict, so that a side whose own
        # checks passed still learns why the other refused (instead of a bare EOF later).
        wire.write(b"".join(frame_pieces(encode(HELLO, bytes(session_id), 1, [_text(problem or "")]))))
        if problem:
            raise HandshakeError(problem)
        verdict = _read_hello(wire, their_role, counter=1)
        if len(verdict.arrays) != 1 or verdict.arrays[0].dtype != np.uint8:
            raise HandshakeError(f"{their_role} did not send a handshake verdict")
        if verdict.arrays[0].size:
            raise HandshakeError(f"{their_role} refused the handshake: {bytes(verdict.arrays[0]).decode(errors='replace')}")
        wire.peer = their_role
        return Link(wire, role=role, peer_role=their_role, session_id=bytes(session_id), timeout_s=timeout_s,
                    emulate=emulate, max_message_bytes=max_message_bytes, tls=tls is not None)
    except BaseException:
        sock.close()
        raise


def connect(host: str, port: int, *, role: str, peer_role: str, tls: TlsConfig | None, session_id: bytes,
            version: str, fingerprint: str, timeout_s: float, emulate: NetworkEmulation | None = None,
            max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Link:
    """Dial the `peer_role` at host:port and handshake; see the module docstring."""
    _check_args(role, tls, session_id, timeout_s)
    expected = _roles(peer_role)
    _check_plaintext(tls, host)
    peer = " or ".join(expected)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        raise PeerTimeout(f"cannot reach the {peer} at {host}:{port} within {timeout_s:g} s") from None
    except OSError as err:
        raise PeerGone(f"cannot reach the {peer} at {host}:{port}: {err.strerror or err}") from None
    return _handshake(sock, server_side=False, role=role, expected=expected, tls=tls, session_id=session_id,
                      version=version, fingerprint=fingerprint, timeout_s=timeout_s, emulate=emulate,
                      max_message_bytes=max_message_bytes)


class Listener:
    """A listening socket (made by `listen`); `accept` handshakes one peer at a time."""

    def __init__(self, sock: socket.socket, *, role: str, tls: TlsConfig | None) -> None:
        self._sock, self.role, self.tls = sock, role, tls
        self.host, self.port = sock.getsockname()[:2]  # port 0 -> the one bound

    def accept(self, *, peer_role: str | Sequence[str], session_id: bytes, version: str, fingerprint: str,
               timeout_s: float, emulate: NetworkEmulation | None = None,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Link:
        """Wait (at most `timeout_s`) for a peer of one of `peer_role`, handshake, return the link.
        `session_id=None`: join the session the peer names (a server of many sessions)."""
        _check_args(self.role, self.tls, session_id, timeout_s)
        expected = _roles(peer_role)
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(timeout_s * 1000.0):
            raise PeerTimeout(f"no {' or '.join(expected)} connected within {timeout_s:g} s")
        sock, addr = self._sock.accept()
        if self.tls is None and not ipaddress.ip_address(addr[0].split("%")[0]).is_loopback:
            sock.close()
            raise InsecureLinkError(f"plaintext connection from {addr[0]} refused: loopback only")
        return _handshake(sock, server_side=True, role=self.role, expected=expected, tls=self.tls,
                          session_id=session_id, version=version, fingerprint=fingerprint, timeout_s=timeout_s,
                          emulate=emulate, max_message_bytes=max_message_bytes)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def listen(host: str, port: int, *, role: str, tls: TlsConfig | None, backlog: int = 16) -> Listener:
    """Listen on host:port (0 = any free port; see `Listener.port`)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if tls is not None and tls.role != role:
        raise ValueError(f"TLS keys of the {tls.role} used for the {role}")
    _check_plaintext(tls, host)
    try:
        sock = socket.create_server((host, port), backlog=backlog)
    except OSError as err:
        raise TransportError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return Listener(sock, role=role, tls=tls)
