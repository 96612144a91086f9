"""mpc.transport on loopback: frames, TLS, handshake, errors, timeouts, emulation, keygen.

Every wait is bounded: links use short timeouts, so a bug shows as an error, not a hang.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from mpc.ledger import NETWORKS
from mpc.transport import (FrameError, HandshakeError, InsecureLinkError, NetworkEmulation, PeerGone,
                           PeerTimeout, PlaintextWarning, TlsConfig, TlsConfigError, TransportError, connect,
                           listen, write_keys)
from mpc.transport.frames import DATA, HEADER, HELLO, MAGIC, WIRE_VERSION, encode
from pspec_jax.cli import main as pspec_main

pytestmark = pytest.mark.filterwarnings("ignore::mpc.transport.PlaintextWarning")

SID = bytes(range(16))
HS = dict(session_id=SID, version="pspec/1", fingerprint="model-abc123", timeout_s=10.0)
REPO = Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    write_keys(d)
    return d


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> Path:
    """Keys from a different CA."""
    d = tmp_path_factory.mktemp("other-keys")
    write_keys(d)
    return d


def _both(client_fn, server_fn, timeout=30.0):
    """Run server_fn in a thread and client_fn here; return (client result, server result),
    each a value or the exception it raised."""
    out = {}

    def wrap(key, fn):
        try:
            out[key] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out[key] = err

    t = threading.Thread(target=wrap, args=("server", server_fn), daemon=True)
    t.start()
    wrap("client", client_fn)
    t.join(timeout)
    assert not t.is_alive(), "server side still running: a hang"
    return out["client"], out["server"]


def _handshake(server_tls=None, client_tls=None, server_kw=None, client_kw=None, emulate=None,
               peer_role="server"):
    lst = listen("127.0.0.1", 0, role="server", tls=server_tls)
    try:
        return _both(lambda: connect("127.0.0.1", lst.port, role="client", peer_role=peer_role, tls=client_tls,
                                     emulate=emulate, **{**HS, **(client_kw or {})}),
                     lambda: lst.accept(peer_role="client", emulate=emulate, **{**HS, **(server_kw or {})}))
    finally:
        lst.close()


@contextlib.contextmanager
def pair(keys_dir=None, emulate=None, **kw):
    """(client link, server link), TLS from `keys_dir` or plaintext."""
    tls = {r: TlsConfig.from_dir(keys_dir, r) for r in ("client", "server")} if keys_dir else {}
    client, server = _handshake(tls.get("server"), tls.get("client"), kw, kw, emulate)
    for x in (client, server):
        if isinstance(x, BaseException):
            raise x
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def _frame_bytes(frame) -> bytes:
    return frame.head + b"".join(bytes(p) for p in frame.payloads)


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8)


@contextlib.contextmanager
def raw_client(**accept_kw):
    """A bare socket that has sent a valid hello, and the server's link to it."""
    lst = listen("127.0.0.1", 0, role="server", tls=None)
    sock = socket.create_connection(("127.0.0.1", lst.port), timeout=5)
    hello = encode(HELLO, SID, 0, [_text("client"), _text(HS["version"]), _text(HS["fingerprint"])])
    verdict = encode(HELLO, SID, 1, [_text("")])  # "" = no objection
    sock.sendall(_frame_bytes(hello) + _frame_bytes(verdict))
    link = lst.accept(peer_role="client", **{**HS, "timeout_s": 3.0, **accept_kw})
    try:
        yield sock, link
    finally:
        sock.close()
        link.close()
        lst.close()


def _header(counter=2, n=1, desc_len=18, total=8, magic=MAGIC, session=SID, kind=DATA) -> bytes:
    return HEADER.pack(magic, WIRE_VERSION, kind, 0, session, counter, n, desc_len, total)


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# --- round trips ---------------------------------------------------------------------------
def _sample_arrays():
    rng = np.random.default_rng(0)
    out = []
    for dt in (np.uint8, np.int32, np.int64, np.uint64, np.float32, np.float64):
        for shape in [(), (0,), (3, 0, 2), (7,), (2, 3, 4)]:
            info = np.iinfo(dt) if np.issubdtype(dt, np.integer) else None
            x = (rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True) if info
                 else rng.standard_normal(shape).astype(dt))
            out.append(x)
    out += [np.array(True), np.zeros(0, bool), rng.random(13) > 0.5, rng.random((3, 5, 7)) > 0.5]
    out.append(np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2])  # not contiguous
    out.append(np.arange(5, dtype=">i8"))  # big-endian input travels little-endian
    out.append(np.array([np.inf, -np.inf, np.nan, -0.0, 5e-324]))
    out.append(np.array([0, 1, 2**63, 2**64 - 1], np.uint64))
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_round_trip_every_dtype_and_shape(tls, keys):
    xs = _sample_arrays()
    with pair(keys if tls else None) as (client, server):
        client.send(xs)
        got = server.recv()
        server.send(got[::-1])
        back = client.recv()[::-1]
        assert client.peer_role == "server" and server.peer_role == "client" and client.tls == tls
    for x, y in zip(xs, back):
        assert y.shape == x.shape
        assert y.dtype == x.dtype.newbyteorder("=") or (x.dtype == ">i8" and y.dtype == np.int64)
        np.testing.assert_array_equal(y, x)
    assert client.stats.messages_sent == 1 and client.stats.messages_received == 1


def test_jax_arrays_travel():
    import jax.numpy as jnp

    x = jnp.arange(6, dtype=jnp.uint64).reshape(2, 3)
    with pair() as (client, server):
        client.send([np.asarray(x)])
        (y,) = server.recv()
    np.testing.assert_array_equal(y, np.asarray(x))


def test_send_snapshots_writeable_arrays():
    x = np.arange(10, dtype=np.int64)
    with pair() as (client, server):
        client.send([x])
        x[:] = -1  # after send returned: must not change what travels
        (y,) = server.recv()
    np.testing.assert_array_equal(y, np.arange(10))


def test_bool_is_bit_packed_and_framing_formula():
    with pair() as (client, server):
        arrays = [np.ones(1001, bool), np.zeros((2, 3), np.float32), np.array(7, np.uint64)]
        client.send(arrays)
        server.recv()
        s = client.stats
        assert s.bytes_payload_sent == 126 + 24 + 8  # ceil(1001 / 8) bytes for the bools
        assert s.bytes_framing_sent == 48 + (10 + 8) + (10 + 16) + 10  # 48 + sum(10 + 8 ndim)
        assert s.bytes_wire_sent == s.bytes_payload_sent + s.bytes_framing_sent  # plaintext
        assert server.stats.bytes_payload_received == s.bytes_payload_sent


@pytest.mark.parametrize("bits", range(1, 65))
def test_words_pack_to_the_ledger_count_and_back(bits):
    """An opening of n `bits`-bit words travels as exactly ceil(n * bits / 8) bytes (what
    the ledger counts) and unpacks to the words' low bits."""
    from mpc.channel import pack_words, unpack_words

    rng = np.random.default_rng(bits)
    low = np.uint64(2**64 - 1) if bits == 64 else np.uint64((1 << bits) - 1)
    for n in (0, 1, 7, 8, 9, 1001):
        words = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
        packed = pack_words(words, bits)
        assert packed.dtype == np.uint8 and packed.size == (n * bits + 7) // 8
        np.testing.assert_array_equal(unpack_words(packed, n, bits), words & low)


def test_tls_wire_bytes_are_measured(keys):
    with pair(keys) as (client, server):
        _both(lambda: client.exchange([np.zeros(1)]), lambda: server.exchange([np.zeros(1)]))  # in step
        sent0, recv0 = client.stats.bytes_wire_sent, server._wire.bytes_received
        x = np.arange(100_000, dtype=np.uint64)  # 800 kB: 49 TLS records of <= 16 KiB
        client.send([x])
        server.recv()
        client.flush()
        sent = client.stats.bytes_wire_sent - sent0
        assert sent == server._wire.bytes_received - recv0  # what one wrote, the other read
        frame = 800_000 + 48 + 18
        records = (sent - frame) / 22  # TLS 1.3 AEAD: 5 header + 1 type + 16 tag per record
        assert records == int(records) and -(-frame // 16384) <= records <= -(-frame // 16384) + 2


def test_64_mib_message_is_chunked():
    x = np.arange(8 << 20, dtype=np.uint64)  # 64 MiB
    x.setflags(write=False)
    with pair() as (client, server):
        client.send([x])
        (y,) = server.recv()
    assert y.nbytes == 64 << 20 and np.array_equal(x, y)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_large_exchange_both_ways_does_not_deadlock(tls, keys):
    a = np.full(4 << 20, 1, np.uint64)  # 32 MiB each way: far beyond the socket buffers
    b = np.full(4 << 20, 2, np.uint64)
    with pair(keys if tls else None) as (client, server):
        got_client, got_server = _both(lambda: client.exchange([a]), lambda: server.exchange([b]))
    assert not isinstance(got_client, BaseException), got_client
    assert not isinstance(got_server, BaseException), got_server
    assert np.array_equal(got_client[0], b) and np.array_equal(got_server[0], a)


def test_many_queued_sends_keep_order():
    with pair() as (client, server):
        for i in range(50):
            client.send([np.full(i * 1000, i, np.int32)])  # mixes fast-path and queued writes
        for i in range(50):
            (y,) = server.recv()
            assert y.size == i * 1000 and (y == i).all()


# --- TLS and plaintext -------------------------------------------------------------------
def test_client_certificate_of_another_ca_is_rejected(keys, other_keys):
    # The client trusts the right CA but presents a certificate another CA signed.
    foreign = TlsConfig("client", keys / "ca.pem", other_keys / "client.pem", other_keys / "client.key")
    client, server = _handshake(TlsConfig.from_dir(keys, "server"), foreign)
    assert isinstance(server, HandshakeError) and isinstance(client, HandshakeError), (client, server)
    assert "certificate verify failed" in _one_line(server)
    assert "unknown ca" in _one_line(client)


def test_server_of_another_ca_is_rejected(keys, other_keys):
    client, server = _handshake(TlsConfig.from_dir(other_keys, "server"), TlsConfig.from_dir(keys, "client"))
    assert isinstance(client, HandshakeError) and isinstance(server, HandshakeError), (client, server)
    assert "certificate verify failed" in _one_line(client)
    assert "unknown ca" in _one_line(server)


def test_certificate_of_the_wrong_role_is_rejected(keys):
    dealer_as_client = TlsConfig("client", keys / "ca.pem", keys / "dealer.pem", keys / "dealer.key")
    client, server = _handshake(TlsConfig.from_dir(keys, "server"), dealer_as_client)
    assert isinstance(server, HandshakeError), server
    assert _one_line(server) == "client presented a certificate for dealer, expected client"
    assert isinstance(client, HandshakeError), client
    assert _one_line(client) == f"server refused the handshake: {server}"


def test_tls_config_errors(keys, tmp_path):
    with pytest.raises(TlsConfigError, match="pspec keygen"):
        TlsConfig.from_dir(tmp_path / "nowhere", "client")
    bad = tmp_path / "bad"
    write_keys(bad)
    (bad / "client.key").write_text("not a key")
    with pytest.raises(TlsConfigError, match="client.key is not"):
        TlsConfig.from_dir(bad, "client")
    (bad / "server.pem").write_bytes((keys / "dealer.pem").read_bytes())
    with pytest.raises(TlsConfigError, match="certificate for dealer, not server"):
        TlsConfig.from_dir(bad, "server")
    (bad / "dealer.pem").write_bytes((keys / "dealer.pem").read_bytes())  # other CA's cert
    with pytest.raises(TlsConfigError, match="not signed by"):
        TlsConfig.from_dir(bad, "dealer")
    with pytest.raises(ValueError, match="TLS keys of the dealer used for the client"):
        connect("127.0.0.1", 1, role="client", peer_role="server", tls=TlsConfig.from_dir(keys, "dealer"), **HS)


def test_plaintext_refused_off_loopback():
    with pytest.raises(InsecureLinkError, match="loopback only"):
        connect("192.0.2.1", 9, role="client", peer_role="server", tls=None, **HS)  # never dialled
    with pytest.raises(InsecureLinkError):
        listen("0.0.0.0", 0, role="server", tls=None)


def test_plaintext_on_loopback_warns():
    with pytest.warns(PlaintextWarning, match=r"^plaintext link on loopback \(no TLS\): for tests only$"):
        listen("127.0.0.1", 0, role="server", tls=None).close()


def test_listener_port_zero_and_accept_timeout(keys):
    with listen("127.0.0.1", 0, role="server", tls=TlsConfig.from_dir(keys, "server")) as lst:
        assert lst.port > 0
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout, match="no client connected within 0.3 s"):
            lst.accept(peer_role="client", **{**HS, "timeout_s": 0.3})
        assert time.monotonic() - t0 < 1.0


def test_connect_refused_is_one_line():
    with listen("127.0.0.1", 0, role="server", tls=None) as lst:
        port = lst.port
    with pytest.raises(PeerGone, match="cannot reach the server"):
        connect("127.0.0.1", port, role="client", peer_role="server", tls=None, **HS)


# --- handshake mismatches --------------------------------------------------------------------
@pytest.mark.parametrize("field, theirs, expect", [
    ("version", "pspec/2", "server speaks protocol pspec/2, client pspec/1"),
    ("fingerprint", "model-zzz", "model fingerprints differ: server has model-zzz, client model-abc123"),
    ("session_id", b"\xff" * 16, "server is in session ffffffff"),
])
def test_handshake_mismatch(field, theirs, expect):
    client, server = _handshake(server_kw={field: theirs})
    assert isinstance(client, HandshakeError) and isinstance(server, HandshakeError), (client, server)
    assert expect in _one_line(client)
    _one_line(server)


def test_handshake_wrong_peer_role():
    client, server = _handshake(peer_role="dealer")
    assert isinstance(client, HandshakeError) and "client expected the dealer" in _one_line(client)
    assert isinstance(server, HandshakeError), server
    assert _one_line(server).startswith("client refused the handshake: client expected the dealer")


def test_tls_against_plaintext_fails_cleanly(keys):
    client, server = _handshake(None, TlsConfig.from_dir(keys, "client"))
    assert isinstance(server, HandshakeError) and "speaks TLS" in _one_line(server)
    assert isinstance(client, TransportError), client


# --- malformed frames -----------------------------------------------------------------------------
def test_bad_magic():
    with raw_client() as (sock, link):
        sock.sendall(b"GET / HTTP/1.1\r\n" + bytes(32))
        with pytest.raises(FrameError, match="bad magic"):
            link.recv()
        with pytest.raises(FrameError):  # the stream is out of step: stays broken
            link.recv()


def test_truncated_frame():
    with raw_client() as (sock, link):
        frame = _frame_bytes(encode(DATA, SID, 2, [np.zeros(1000, np.uint8)]))
        sock.sendall(frame[:500])
        sock.close()
        with pytest.raises(PeerGone, match="middle of a message"):
            link.recv()


def test_oversized_message_rejected_before_allocating():
    with raw_client(max_message_bytes=1 << 20) as (sock, link):
        sock.sendall(_header(desc_len=18, total=1 << 40))  # 1 TiB announced
        tracemalloc.start()
        try:
            with pytest.raises(FrameError, match="above the 1.0 MiB limit"):
                link.recv()
            assert tracemalloc.get_traced_memory()[1] < (1 << 20)
        finally:
            tracemalloc.stop()


def test_oversized_send_refused_locally():
    with pair(max_message_bytes=1000) as (client, server):
        with pytest.raises(FrameError, match="exceeds"):
            client.send([np.zeros(1001, np.uint8)])


@pytest.mark.parametrize("counters, expect", [((2, 2), "replayed"), ((3,), "out of order")])
def test_replayed_or_reordered_counter(counters, expect):
    with raw_client() as (sock, link):
        for c in counters:
            sock.sendall(_frame_bytes(encode(DATA, SID, c, [np.arange(3)])))
        if len(counters) == 2:
            link.recv()
        with pytest.raises(FrameError, match=expect):
            link.recv()


def test_wrong_session_in_data_frame():
    with raw_client() as (sock, link):
        sock.sendall(_frame_bytes(encode(DATA, b"\x01" * 16, 2, [np.arange(3)])))
        with pytest.raises(FrameError, match="carries session"):
            link.recv()


def test_dtype_outside_whitelist():
    with raw_client() as (sock, link):
        sock.sendall(_header() + struct.pack("<BBQQ", 99, 1, 1, 8) + bytes(8))
        with pytest.raises(FrameError, match="dtype code 99"):
            link.recv()
    with pair() as (client, _):
        for bad in (np.zeros(2, np.float16), np.zeros(2, complex), np.array([object()])):
            with pytest.raises(FrameError, match="cannot be sent"):
                client.send([bad])


def test_descriptor_disagreeing_with_shape():
    with raw_client() as (sock, link):
        sock.sendall(_header(total=16) + struct.pack("<BBQQ", 3, 1, 1, 16) + bytes(16))  # 1 int64 != 16 B
        with pytest.raises(FrameError, match="declared 16 payload bytes"):
            link.recv()


# --- timeouts and departures ----------------------------------------------------------------
def test_recv_timeout_then_link_still_usable():
    with pair(timeout_s=0.5) as (client, server):
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout) as info:
            server.recv()
        elapsed = time.monotonic() - t0
        assert 0.45 <= elapsed <= 1.0, elapsed
        assert _one_line(info.value) == "no message from client within 0.5 s"
        client.send([np.arange(3)])  # nothing was consumed: the link is still in step
        np.testing.assert_array_equal(server.recv()[0], np.arange(3))


def test_peer_closed_session():
    with pair() as (client, server):
        client.send([np.arange(2)])
        client.close()
        server.recv()
        with pytest.raises(PeerGone, match="^client closed the session$"):
            server.recv()
        with pytest.raises(PeerGone):
            client.send([np.arange(2)])
        client.close()  # idempotent


def test_goodbye_carries_a_reason():
    with pair() as (client, server):
        server.close(reason="its dealer went away\nsecond line dropped")
        with pytest.raises(PeerGone, match="^server closed the session: its dealer went away$"):
            client.recv()


def test_close_wakes_a_blocked_recv():
    with pair(timeout_s=5.0) as (client, server):
        threading.Timer(0.2, server.close).start()
        t0 = time.monotonic()
        with pytest.raises(PeerGone):
            server.recv()
        assert time.monotonic() - t0 < 2.0


def test_accept_one_of_several_roles(keys):
    with listen("127.0.0.1", 0, role="server", tls=TlsConfig.from_dir(keys, "server")) as lst:
        dealer, server = _both(
            lambda: connect("127.0.0.1", lst.port, role="dealer", peer_role="server",
                            tls=TlsConfig.from_dir(keys, "dealer"), **HS),
            lambda: lst.accept(peer_role=("client", "dealer"), **HS))
    assert server.peer_role == "dealer" and dealer.peer_role == "server"
    dealer.send([np.arange(3)])
    np.testing.assert_array_equal(server.recv()[0], np.arange(3))
    dealer.close()
    server.close()


def test_peer_vanishes_without_goodbye():
    with raw_client() as (sock, link):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        sock.close()
        with pytest.raises(PeerGone, match="client"):
            link.recv()


def test_peer_process_killed():
    child_code = textwrap.dedent(f"""
        import sys, time, warnings, numpy as np
        warnings.simplefilter("ignore")
        from mpc.transport import connect
        link = connect("127.0.0.1", int(sys.argv[1]), role="client", peer_role="server", tls=None,
                       session_id={SID!r}, version={HS['version']!r}, fingerprint={HS['fingerprint']!r},
                       timeout_s=30)
        link.send([np.arange(4)])
        time.sleep(60)
    """)
    with listen("127.0.0.1", 0, role="server", tls=None) as lst:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen([sys.executable, "-c", child_code, str(lst.port)], env=env)
        try:
            with lst.accept(peer_role="client", **{**HS, "timeout_s": 60.0}) as link:
                np.testing.assert_array_equal(link.recv()[0], np.arange(4))
                child.send_signal(signal.SIGKILL)
                t0 = time.monotonic()
                with pytest.raises(PeerGone, match="client"):
                    link.recv()
                assert time.monotonic() - t0 < 5.0
        finally:
            child.kill()
            child.wait(10)


# --- network emulation -----------------------------------------------------------------------
def test_presets_are_the_ledgers():
    for name, model in NETWORKS.items():
        e = NetworkEmulation.preset(name)
        assert (e.latency_s, e.bandwidth_bps) == (model.latency_s, model.bandwidth_bps)
    assert NetworkEmulation.preset("custom:8:20") == NetworkEmulation(latency_s=0.02, bandwidth_bps=8e6)
    with pytest.raises(ValueError):
        NetworkEmulation(latency_s=-1, bandwidth_bps=1)


def test_emulated_latency_ping_pong():
    emu = NetworkEmulation(latency_s=0.020, bandwidth_bps=1e12)
    with pair(emulate=emu) as (client, server):
        def serve():
            for _ in range(10):
                server.send(server.recv())

        def ping():
            t0 = time.monotonic()
            for i in range(10):
                client.send([np.array([i])])
                assert client.recv()[0][0] == i
            return time.monotonic() - t0

        elapsed, _ = _both(ping, serve)
    assert not isinstance(elapsed, BaseException), elapsed
    assert 0.400 * 0.85 <= elapsed <= 0.400 * 1.15, elapsed


def test_emulated_latency_pipelines():
    emu = NetworkEmulation(latency_s=0.050, bandwidth_bps=1e12)
    with pair(emulate=emu) as (client, server):
        t0 = time.monotonic()
        for i in range(5):
            client.send([np.array([i])])
        for i in range(5):
            server.recv()
        elapsed = time.monotonic() - t0
    assert 0.050 <= elapsed <= 0.050 * 1.5, elapsed  # five in flight at once, not 5 x 50 ms


def test_emulated_bandwidth():
    emu = NetworkEmulation(latency_s=0.0, bandwidth_bps=8e6)
    x = np.zeros(1_000_000, np.uint8)  # 1 MB at 8 Mbit/s: 1 s
    # A timeout below the transmission time: the bytes trickle in, as on a real link.
    with pair(emulate=emu, timeout_s=0.5) as (client, server):
        t0 = time.monotonic()
        got, _ = _both(lambda: client.exchange([x]), lambda: server.exchange([x]))
        elapsed = time.monotonic() - t0
    assert not isinstance(got, BaseException), got
    assert 0.85 <= elapsed <= 1.15, elapsed  # both directions at once: full duplex


def test_emulated_exchange_costs_latency_plus_transfer():
    emu = NetworkEmulation(latency_s=0.030, bandwidth_bps=40e6)
    x = np.zeros(250_000, np.uint64)  # 2 MB: 0.4 s at 40 Mbit/s, + 30 ms
    with pair(emulate=emu) as (client, server):
        t0 = time.monotonic()
        got, _ = _both(lambda: client.exchange([x]), lambda: server.exchange([x]))
        elapsed = time.monotonic() - t0
    assert not isinstance(got, BaseException), got
    assert 0.43 * 0.85 <= elapsed <= 0.43 * 1.15, elapsed


# --- pspec keygen ----------------------------------------------------------------------------
def test_keygen_cli(tmp_path, capsys):
    d = tmp_path / "keys"
    assert pspec_main(["keygen", str(d)]) == 0
    for role in ("ca", "client", "server", "dealer"):
        assert stat.S_IMODE((d / f"{role}.key").stat().st_mode) == 0o600
        assert (d / f"{role}.pem").is_file()
    for role in ("client", "server", "dealer"):
        TlsConfig.from_dir(d, role)
    before = (d / "ca.pem").read_bytes()
    capsys.readouterr()
    assert pspec_main(["keygen", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert (d / "ca.pem").read_bytes() == before
    assert pspec_main(["keygen", str(d), "--force"]) == 0
    assert (d / "ca.pem").read_bytes() != before
    afile = tmp_path / "file"
    afile.write_text("x")
    capsys.readouterr()
    assert pspec_main(["keygen", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err
