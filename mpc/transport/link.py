"""A link: one persistent, full-duplex connection between two parties (made by
`mpc.transport.handshake.connect` or `listen(...).accept(...)`).

Sending. Every message is encoded on the caller's thread (so a bad dtype raises at
once) and written either directly, when the line is idle and the message small enough
to go out without waiting (no thread hand-off: a small round costs one syscall each
way), or by the link's sender thread, which keeps order, holds emulated frames until
they are due, and lets `exchange` write a large message while the caller reads the
peer's (two 100 MB messages crossing cannot deadlock). Errors of the sender thread
surface on the caller's next call.

Receiving happens on the caller's thread; one thread receives per link.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Sequence

import numpy as np

from mpc.transport.emulation import NetworkEmulation
from mpc.transport.errors import FrameError, PeerGone, PeerTimeout, TransportError
from mpc.transport.frames import DATA, GOODBYE, Frame, encode, read_message
from mpc.transport.wire import CHUNK, Wire

MAX_REASON_BYTES = 200  # a goodbye's reason: one short line
FAST_PATH_BYTES = 64 << 10  # messages up to this size skip the sender thread when it is idle
_COALESCE_BYTES = 64 << 10  # payloads up to this size are joined with their neighbours


@dataclasses.dataclass
class LinkStats:
    """What this link put on and took off its socket since the handshake.

    bytes_wire_* count every byte written to / read from the socket, TLS records
    included; payload and framing are the frame-level parts (see `frames`).
    """

    messages_sent: int = 0
    messages_received: int = 0
    bytes_payload_sent: int = 0
    bytes_framing_sent: int = 0
    bytes_wire_sent: int = 0
    bytes_payload_received: int = 0
    bytes_framing_received: int = 0
    bytes_wire_received: int = 0
    bytes_handshake_sent: int = 0  # TLS handshake, hello and verdict: not in the counts above
    bytes_handshake_received: int = 0


@dataclasses.dataclass
class _Outgoing:
    """One queued write: a frame, or the unsent rest of a fast-path write."""

    frame: Frame | None
    raw: memoryview | None
    start: float  # emulation: when the line starts transmitting it (else 0)
    due: float  # emulation: when its last byte is delivered (else 0)
    payload_bytes: int
    framing_bytes: int
    messages: int
    done: bool = False  # written, or abandoned after a send error; guarded by Link._cv


def frame_pieces(frame: Frame, chunk: int = CHUNK):
    """The frame as writes of at most `chunk` bytes: small parts joined (fewer syscalls
    and TLS records), large payloads sliced without copying."""
    pending, size = [frame.head], len(frame.head)
    for p in frame.payloads:
        if len(p) <= _COALESCE_BYTES and size + len(p) <= chunk:
            pending.append(p)
            size += len(p)
            continue
        if pending:
            yield b"".join(pending)
        pending, size = [], 0
        if len(p) <= _COALESCE_BYTES:
            pending, size = [p], len(p)
            continue
        for off in range(0, len(p), chunk):
            yield p[off:off + chunk]
    if pending:
        yield b"".join(pending)


class Link:
    """A connected, handshaken link; made by `connect` or `Listener.accept`."""

    def __init__(self, wire: Wire, *, role: str, peer_role: str, session_id: bytes, timeout_s: float,
                 emulate: NetworkEmulation | None, max_message_bytes: int, tls: bool) -> None:
        self.role, self.peer_role, self.session_id = role, peer_role, session_id
        self.timeout_s, self.emulate, self.tls = timeout_s, emulate, tls
        self.max_message_bytes = max_message_bytes
        self._wire = wire
        # The handshake's reads may have read ahead into the first message: that part is data.
        self.stats = LinkStats(bytes_handshake_sent=wire.bytes_sent,
                               bytes_handshake_received=wire.bytes_received - wire.unread())
        self._send_counter = self._recv_counter = 2  # frames 0 and 1 were the handshake's
        self._post_lock = threading.Lock()  # encode + number + enqueue (or write) as one step
        self._cv = threading.Condition()
        self._queue: collections.deque[_Outgoing] = collections.deque()
        self._stopping = False
        self._send_error: TransportError | None = None
        self._recv_error: TransportError | None = None
        self._line_free_at = 0.0  # emulation: when this direction's line finishes its last message
        # Emulation writes in pieces of ~10 ms of line time, so long messages trickle.
        self._chunk = CHUNK if emulate is None else int(min(CHUNK, max(16 << 10, emulate.bandwidth_bps / 800)))
        self._closed = False
        self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                        name=f"pspec-link-{role}-to-{peer_role}")
        self._sender.start()

    # --- sending ---------------------------------------------------------------------
    def send(self, arrays: Sequence[np.ndarray]) -> None:
        """Queue one message (order kept); returns before it is written. Writeable arrays
        are copied first, read-only ones (np.asarray of a jax.Array) are not."""
        self._post(DATA, arrays, copy=True)

    def exchange(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Send mine and receive theirs in one round (both sides call it).

        `arrays` are not copied: it returns after they are written. If it raises, they
        may still be in use until `flush()` returns or the link is closed.
        """
        item = self._post(DATA, arrays, copy=False)  # no copy: we wait for the write below
        theirs = self.recv()
        self._await(item)
        return theirs

    def flush(self) -> None:
        """Wait until every queued message is on the socket (and counted in `stats`)."""
        with self._cv:
            last = self._queue[-1] if self._queue else None
        if last is not None:
            self._await(last)
        elif self._send_error is not None:
            raise self._send_error

    def _post(self, kind: int, arrays, copy: bool) -> _Outgoing:
        self._check_open()
        with self._post_lock:
            frame = encode(kind, self.session_id, self._send_counter, arrays, copy=copy,
                           max_message_bytes=self.max_message_bytes)
            self._send_counter += 1
            item = _Outgoing(frame, None, 0.0, 0.0, frame.payload_bytes, frame.framing_bytes, int(kind == DATA))
            if self.emulate is not None:  # the line serialises messages; latency overlaps them
                item.start = max(time.monotonic(), self._line_free_at)
                self._line_free_at = item.start + frame.nbytes * 8.0 / self.emulate.bandwidth_bps
                item.due = self._line_free_at + self.emulate.latency_s
            with self._cv:
                if self._send_error is not None:
                    raise self._send_error
                if self.emulate is None and frame.nbytes <= FAST_PATH_BYTES and not self._queue:
                    # Fast path: the line is idle, so write now, on this thread, what the
                    # socket takes without waiting (no hand-off to the sender thread).
                    try:
                        rest = self._wire.try_write(b"".join(frame_pieces(frame)))
                    except TransportError as err:
                        self._send_error = err
                        raise
                    if rest is None:
                        item.done = True
                        self._account(item)
                        return item
                    item.frame, item.raw = None, rest  # the peer's window is full: the sender finishes
                self._queue.append(item)
                self._cv.notify_all()
            return item

    def _account(self, item: _Outgoing) -> None:
        s = self.stats
        s.messages_sent += item.messages
        s.bytes_payload_sent += item.payload_bytes
        s.bytes_framing_sent += item.framing_bytes
        s.bytes_wire_sent = self._wire.bytes_sent - s.bytes_handshake_sent

    def _send_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                item = self._queue[0]  # stays queued while written: the fast path sees a busy line
            try:
                if item.raw is not None:
                    self._wire.send_raw(item.raw)
                else:
                    sent = 0
                    for piece in frame_pieces(item.frame, self._chunk):
                        sent += len(piece)
                        if self.emulate is not None:
                            # Each chunk leaves when the emulated line would have delivered
                            # it, so a long message trickles in as on a real link (and the
                            # receiver's timeout counts from the last byte, not the first).
                            self._sleep_until(item.start + sent * 8.0 / self.emulate.bandwidth_bps
                                              + self.emulate.latency_s)
                        self._wire.write(piece)
            except TransportError as err:
                self._fail_sender(err)
                return
            except Exception as err:  # a bug must not leave callers waiting forever
                self._fail_sender(TransportError(f"sender to {self.peer_role} failed: {err!r}"))
                return
            with self._cv:
                self._queue.popleft()
                item.done = True
                self._account(item)
                self._cv.notify_all()

    def _sleep_until(self, t: float) -> None:
        while (delay := t - time.monotonic()) > 0:
            time.sleep(min(delay, 0.05))  # short naps so an aborting close is seen
            if self._send_error is not None:
                raise self._send_error

    def _fail_sender(self, err: TransportError) -> None:
        with self._cv:
            if self._send_error is None:
                self._send_error = err
            for it in self._queue:
                it.done = True
            self._queue.clear()
            self._cv.notify_all()

    def _await(self, item: _Outgoing) -> None:
        """Wait until `item` is written; time out only when the peer stops reading."""
        last, last_change = self._wire.bytes_sent, time.monotonic()
        with self._cv:
            while not item.done:
                self._cv.wait(min(self.timeout_s, 0.25))
                now = time.monotonic()
                if self._wire.bytes_sent != last:
                    last, last_change = self._wire.bytes_sent, now
                elif not item.done and now - max(last_change, item.due) > self.timeout_s:
                    self._send_error = PeerTimeout(f"{self.peer_role} read nothing of ours for {self.timeout_s:g} s")
                    self._cv.notify_all()  # the sender gives up at its next check
                    raise self._send_error
            if self._send_error is not None:
                raise self._send_error

    # --- receiving -------------------------------------------------------------------
    def set_timeout(self, timeout_s: float) -> None:
        """Change the receive/send timeout (e.g. after an accept that polled with a short one)."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = self._wire.timeout_s = float(timeout_s)

    def recv(self) -> list[np.ndarray]:
        """The next message; waits at most `timeout_s` for each piece of it."""
        if self._recv_error is not None:
            raise self._recv_error
        if self._closed:
            raise PeerGone(f"link to {self.peer_role} is closed")
        before = self._wire.delivered
        try:
            msg = read_message(self._wire.read_into, peer=self.peer_role, session_id=self.session_id,
                               counter=self._recv_counter, max_message_bytes=self.max_message_bytes)
        except PeerTimeout as err:
            if self._wire.delivered != before:  # part of a message was consumed: out of step
                self._recv_error = err
            raise
        except PeerGone as gone:
            err = gone
            if self._wire.delivered != before:
                err = PeerGone(f"connection to {self.peer_role} lost in the middle of a message")
            elif self._send_error is None and not self._closed:
                err = PeerGone(f"{self.peer_role} went away without closing the session")
            self._recv_error = err
            raise err from None
        except TransportError as err:
            self._recv_error = err
            raise
        self._recv_counter += 1
        s = self.stats
        s.bytes_framing_received += msg.framing_bytes
        s.bytes_payload_received += msg.payload_bytes
        s.bytes_wire_received = self._wire.bytes_received - s.bytes_handshake_received
        if msg.kind == GOODBYE:
            why = msg.arrays[0] if len(msg.arrays) == 1 and msg.arrays[0].dtype == np.uint8 else None
            why = "" if why is None else bytes(why[:MAX_REASON_BYTES]).decode("utf-8", "replace").splitlines()
            self._recv_error = PeerGone(f"{self.peer_role} closed the session" + (f": {why[0]}" if why else ""))
            raise self._recv_error
        if msg.kind != DATA:
            self._recv_error = FrameError(f"unexpected {msg.kind} frame from {self.peer_role} after the handshake")
            raise self._recv_error
        s.messages_received += 1
        return msg.arrays

    # --- lifetime --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise PeerGone(f"link to {self.peer_role} is closed")
        if self._send_error is not None:
            raise self._send_error

    def close(self, reason: str | None = None) -> None:
        """Say goodbye (the peer's next recv raises PeerGone, quoting `reason`: one public
        line, e.g. why a server drops a session), flush, and close the socket."""
        if self._closed:
            return
        try:
            if self._send_error is None:
                why = [np.frombuffer(reason.encode()[:MAX_REASON_BYTES], np.uint8)] if reason else []
                self._await(self._post(GOODBYE, why, copy=False))
        except TransportError:
            pass  # the peer is gone or stalled: nothing left to flush
        self._closed = True
        with self._cv:
            self._stopping = True
            if self._send_error is None:
                self._send_error = PeerGone(f"link to {self.peer_role} is closed")  # stops a sleeping sender
            self._cv.notify_all()
            if not self._queue:  # never interleave a close_notify with a frame being written
                self._wire.goodbye()
        self._wire.close()
        self._sender.join(timeout=1.0)

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Link({self.role}->{self.peer_role}, {'tls' if self.tls else 'plaintext'}, "
                f"sent {self.stats.messages_sent}, received {self.stats.messages_received})")
