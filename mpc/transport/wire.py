"""Bytes over one socket, plain or TLS, with timeouts and exact wire counts.

The socket is non-blocking; every wait is an explicit `poll` bounded by the link's
timeout, so no read or write can hang. One thread may write while another reads
(a link's sender thread and its caller): writes and reads touch disjoint state, and
the TLS object they share is driven through memory BIOs under a short lock (OpenSSL
objects are not thread-safe), while the socket I/O itself happens outside that lock.
Doing TLS over memory BIOs also lets the writer count the encrypted bytes it puts on
the socket, so `bytes_sent` is exact, record overhead included.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
import threading

from mpc.transport.errors import FrameError, HandshakeError, PeerGone, PeerTimeout

CHUNK = 1 << 20  # largest single socket read or TLS write: bounds transient memory
_READ_BUFFER = 64 << 10  # small reads (headers, small messages) are served from here
_GONE_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.EBADF,
                errno.ESHUTDOWN)


class Wire:
    """Raw socket I/O shared by both kinds: non-blocking sends and reads with timeouts."""

    def __init__(self, sock: socket.socket, peer: str, timeout_s: float) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.peer = peer
        self.timeout_s = timeout_s
        self.bytes_sent = 0  # everything written to the socket, TLS records included
        self.bytes_received = 0
        self.delivered = 0  # bytes handed to readers: a partial read shows as a change
        # One poll object per direction: the reader and the writer wait in different threads.
        self._poll_in, self._poll_out = select.poll(), select.poll()
        self._poll_in.register(sock, select.POLLIN)
        self._poll_out.register(sock, select.POLLOUT)

    # --- waiting ---------------------------------------------------------------------
    def _wait(self, writing: bool) -> None:
        poller = self._poll_out if writing else self._poll_in
        if not poller.poll(self.timeout_s * 1000.0):
            if writing:
                raise PeerTimeout(f"{self.peer} read nothing of ours for {self.timeout_s:g} s")
            raise PeerTimeout(f"no message from {self.peer} within {self.timeout_s:g} s")

    def _gone(self, err: OSError) -> PeerGone:
        return PeerGone(f"connection to {self.peer} lost: {err.strerror or err}")

    # --- raw writes ------------------------------------------------------------------
    def send_raw(self, data) -> int:
        """Write all of `data`, waiting (bounded) while the peer's window is full."""
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            try:
                pos += self.sock.send(view[pos:pos + 4 * CHUNK])
            except BlockingIOError:
                self._wait(writing=True)
            except OSError as err:
                raise self._gone(err) from None
        self.bytes_sent += len(view)
        return len(view)

    def try_send_raw(self, data) -> memoryview | None:
        """Write what the socket takes now; return the rest (None when all went)."""
        view = memoryview(data).cast("B")
        pos = 0
        try:
            while pos < len(view):
                pos += self.sock.send(view[pos:])
        except BlockingIOError:
            pass
        except OSError as err:
            raise self._gone(err) from None
        finally:
            self.bytes_sent += pos
        return view[pos:] if pos < len(view) else None

    # --- raw reads -------------------------------------------------------------------
    def recv_raw_into(self, view: memoryview) -> int:
        """Read at least one byte into `view` (waiting, bounded); EOF raises PeerGone."""
        while True:
            try:
                got = self.sock.recv_into(view)
            except BlockingIOError:
                self._wait(writing=False)
                continue
            except OSError as err:
                raise self._gone(err) from None
            if got == 0:
                raise PeerGone(f"{self.peer} closed the connection")
            self.bytes_received += got
            return got

    # --- the interface a link uses -----------------------------------------------------
    def write(self, data) -> int:
        raise NotImplementedError

    def try_write(self, data) -> memoryview | None:
        raise NotImplementedError

    def read_into(self, dst: memoryview) -> None:
        raise NotImplementedError

    def unread(self) -> int:
        """Bytes read from the socket but not yet handed out (read-ahead)."""
        return 0

    def goodbye(self) -> None:
        """Best-effort end of stream (TLS close_notify); never blocks."""

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        # Closing with unread bytes makes the kernel send a reset, which can destroy our
        # goodbye before the peer reads it: drain what has arrived (bounded) first.
        try:
            for _ in range(64):
                if not self.sock.recv(CHUNK):
                    break
        except OSError:
            pass
        self.sock.close()


class PlainWire(Wire):
    """Plaintext TCP (loopback tests only)."""

    def __init__(self, sock: socket.socket, peer: str, timeout_s: float) -> None:
        super().__init__(sock, peer, timeout_s)
        self._buf = memoryview(bytearray(_READ_BUFFER))
        self._lo = self._hi = 0  # unread bytes are self._buf[lo:hi]

    def unread(self) -> int:
        return self._hi - self._lo

    def write(self, data) -> int:
        return self.send_raw(data)

    def try_write(self, data) -> memoryview | None:
        return self.try_send_raw(data)

    def read_into(self, dst: memoryview) -> None:
        dst = dst.cast("B")
        n, pos = len(dst), min(len(dst), self._hi - self._lo)
        dst[:pos] = self._buf[self._lo:self._lo + pos]
        self._lo += pos
        try:
            while pos < n:
                if n - pos >= len(self._buf):  # large: straight into the destination, no copy
                    pos += self.recv_raw_into(dst[pos:])
                    continue
                got = self.recv_raw_into(self._buf)  # small: one syscall may bring several frames
                take = min(got, n - pos)
                dst[pos:pos + take] = self._buf[:take]
                self._lo, self._hi = take, got
                pos += take
        finally:
            self.delivered += pos


class TlsWire(Wire):
    """TLS 1.3 over memory BIOs (see the module docstring for why)."""

    def __init__(self, sock: socket.socket, peer: str, timeout_s: float, context: ssl.SSLContext,
                 server_side: bool) -> None:
        super().__init__(sock, peer, timeout_s)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=server_side)
        self._lock = threading.Lock()
        self._raw = memoryview(bytearray(CHUNK))

    def _fill(self) -> None:
        got = self.recv_raw_into(self._raw)
        self._in.write(self._raw[:got])

    def handshake(self) -> None:
        """Run the TLS handshake (single-threaded: the link has not started yet)."""
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.send_raw(self._out.read())
                    self._fill()
            self.send_raw(self._out.read())
        except ssl.SSLError as err:
            try:  # the alert OpenSSL queued tells the peer why (e.g. "unknown ca")
                self.try_send_raw(self._out.read())
            except PeerGone:
                pass
            raise HandshakeError(f"TLS handshake with {self.peer} failed: {tls_reason(err)}") from None
        except PeerGone as err:
            raise HandshakeError(f"TLS handshake with {self.peer} failed: {err}") from None

    def unread(self) -> int:
        return self._in.pending + self._tls.pending()  # raw + decrypted-but-unread (approximate)

    def peer_certificate(self) -> dict:
        return self._tls.getpeercert() or {}

    def _encrypt(self, data) -> bytes:
        with self._lock:
            view = memoryview(data).cast("B")
            pos = 0
            while pos < len(view):  # a memory BIO takes everything; the loop is for form
                pos += self._tls.write(view[pos:pos + CHUNK])
            return self._out.read()

    def write(self, data) -> int:
        return self.send_raw(self._encrypt(data))

    def try_write(self, data) -> memoryview | None:
        return self.try_send_raw(self._encrypt(data))

    def read_into(self, dst: memoryview) -> None:
        dst = dst.cast("B")
        pos = 0
        try:
            while pos < len(dst):
                if not self._in.pending and not self._tls.pending():
                    self._fill()  # nothing buffered: skip the read that would raise SSLWantReadError
                got = self._decrypt_into(dst[pos:])
                if got is None:
                    self._fill()
                elif got == 0:
                    raise PeerGone(f"{self.peer} closed the connection")
                else:
                    pos += got
        finally:
            self.delivered += pos

    def _decrypt_into(self, view: memoryview) -> int | None:
        """Plaintext bytes decrypted into `view`; None when a record is incomplete; 0 at
        the peer's close_notify."""
        with self._lock:
            try:
                return self._tls.read(len(view), view)
            except ssl.SSLWantReadError:
                return None
            except ssl.SSLZeroReturnError:
                return 0
            except ssl.SSLError as err:
                # Only tampering or a protocol violation gets here (a bad record MAC, or an
                # alert: the peer rejected our certificate after our side of the handshake).
                raise FrameError(f"TLS error from {self.peer}: {tls_reason(err)}") from None

    def goodbye(self) -> None:
        with self._lock:
            try:
                self._tls.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # unwrap waits for the peer's close_notify, which we do not need
            data = self._out.read()
        try:
            self.try_send_raw(data)
        except PeerGone:
            pass


def tls_reason(err: ssl.SSLError) -> str:
    """One readable line from an SSLError (no file/line suffix)."""
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return f"certificate verify failed: {err.verify_message}"
    if err.reason == "WRONG_VERSION_NUMBER":
        return "wrong version number (the peer does not speak TLS?)"
    if getattr(err, "reason", None):
        return err.reason.lower().replace("_", " ")
    return str(err).split(" (_ssl.c")[0]
