"""The transport's own cost on loopback (no emulation): time per round and throughput.

The peer runs in a second process (as in a real deployment: no shared GIL). Both sides
run the same schedule of `exchange` calls; this side times them:
  * round: median wall time of an 8-byte exchange (one round, both directions), for a
    bare TCP socket (the floor: kernel + Python), the plaintext link and the TLS link;
    the transport's overhead per round is the link's time minus the bare socket's;
  * throughput: 1, 16 and 64 MiB exchanged each way at once, MiB/s per direction.

    PYTHONPATH=. python scripts/bench_transport.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from mpc.transport import PlaintextWarning, TlsConfig, connect, listen, write_keys

SESSION = bytes(range(16))
SIZES_MIB = (1, 16, 64)
HANDSHAKE = dict(session_id=SESSION, version="bench/1", fingerprint="bench", timeout_s=60.0)


def schedule(link, rounds: int, repeats: int, timer=None) -> dict:
    """The exchanges both sides run; `timer` collects this side's times."""
    small = np.zeros(1, np.uint64)  # 8 bytes
    times = []
    for i in range(rounds + 200):  # 200 warm-up rounds
        t0 = time.perf_counter()
        link.exchange([small])
        if i >= 200:
            times.append(time.perf_counter() - t0)
    big = {}
    for mib in SIZES_MIB:
        x = np.ones(mib << 17, np.uint64)  # mib MiB of uint64, read-only: no copy on send
        x.setflags(write=False)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            link.exchange([x])
            ts.append(time.perf_counter() - t0)
        big[mib] = min(ts)
    return {"round": statistics.median(times), "big": big}


def raw_rounds(sock: socket.socket, rounds: int) -> float:
    """The floor: 8-byte exchanges over a bare TCP socket (send, then read 8 bytes)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, times = bytearray(8), []
    for i in range(rounds + 200):
        t0 = time.perf_counter()
        sock.sendall(b"\0" * 8)
        got = 0
        while got < 8:
            got += sock.recv_into(memoryview(buf)[got:])
        if i >= 200:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peer(ports: list[int], keydir: str, rounds: int, repeats: int) -> None:
    warnings.simplefilter("ignore", PlaintextWarning)
    with socket.create_connection(("127.0.0.1", ports[0])) as sock:
        raw_rounds(sock, rounds)
    for port, tls in zip(ports[1:], (None, TlsConfig.from_dir(keydir, "client"))):
        with connect("127.0.0.1", port, role="client", peer_role="server", tls=tls, **HANDSHAKE) as link:
            schedule(link, rounds, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer", nargs=4, metavar=("RAW_PORT", "PLAIN_PORT", "TLS_PORT", "KEYDIR"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer([int(p) for p in args.peer[:3]], args.peer[3], args.rounds, args.repeats)
        return
    warnings.simplefilter("ignore", PlaintextWarning)
    keydir = tempfile.mkdtemp(prefix="pspec-bench-keys-")
    write_keys(keydir)
    raw_srv = socket.create_server(("127.0.0.1", 0))
    listeners = {"plain": listen("127.0.0.1", 0, role="server", tls=None),
                 "tls": listen("127.0.0.1", 0, role="server", tls=TlsConfig.from_dir(keydir, "server"))}
    ports = [raw_srv.getsockname()[1]] + [lst.port for lst in listeners.values()]
    child = subprocess.Popen([sys.executable, __file__, "--rounds", str(args.rounds), "--repeats",
                              str(args.repeats), "--peer", *map(str, ports), keydir])
    try:
        conn, _ = raw_srv.accept()
        with conn:
            floor = raw_rounds(conn, args.rounds)
        results = {}
        for name, lst in listeners.items():
            with lst.accept(peer_role="client", **HANDSHAKE) as link:
                results[name] = schedule(link, args.rounds, args.repeats)
    finally:
        child.wait(timeout=120)
        raw_srv.close()
        for lst in listeners.values():
            lst.close()
    print(f"loopback, {args.rounds} rounds of 8-byte exchange (median), best of {args.repeats} for bulk; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'link':8} {'round us':>9} {'overhead us':>12} " + " ".join(f"{m:>4} MiB MiB/s" for m in SIZES_MIB))
    print(f"{'tcp':8} {floor * 1e6:9.1f} {'-':>12}")
    for name, r in results.items():
        rates = " ".join(f"{m / r['big'][m]:>14.0f}" for m in SIZES_MIB)
        print(f"{name:8} {r['round'] * 1e6:9.1f} {(r['round'] - floor) * 1e6:12.1f} {rates}")


if __name__ == "__main__":
    main()
