"""The dealer process: correlated randomness for client–server sessions.

It never sees a prompt, a weight, a token or a share: a party that joins session S gets
its dealer key k_p (fresh from os.urandom, one pair per session), and then each of its
correction requests (request number, kind and shapes, handles naming earlier masks) is
answered with the words `mpc.dealer.CorrectionMaker` computes from k_0, k_1 and the
request alone. What the dealer learns: session ids, request shapes (the public sizes of
the programs) and the KV cache's row layout (its length after each step, which both
parties know).
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from mpc.dealer import CorrectionMaker, Request
from mpc.prg import KEY_BYTES
from mpc.shares import CLIENT, SERVER
from mpc.transport import PeerTimeout, TransportError
from pspec_jax.runtime.session import DEALER_FINGERPRINT, PROTOCOL_VERSION

log = logging.getLogger("pspec.dealer")


class DealerService:
    """Sessions by id: their keys and correction maker, kept while a party is connected
    (the compiled correction programs outlive them)."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, dict] = {}
        self._programs: dict = {}  # compiled corrections, shared by all sessions
        self._lock = threading.Lock()

    def join(self, session_id: bytes) -> dict:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                keys = {CLIENT: os.urandom(KEY_BYTES), SERVER: os.urandom(KEY_BYTES)}
                maker = CorrectionMaker(keys, programs=self._programs)
                s = self._sessions[session_id] = {"keys": keys, "maker": maker, "links": 0, "requests": 0}
            s["links"] += 1
            return s

    def leave(self, session_id: bytes) -> None:
        with self._lock:
            s = self._sessions[session_id]
            s["links"] -= 1
            if s["links"] == 0:
                del self._sessions[session_id]  # forget the keys and masks

    def serve_link(self, link) -> None:
        """Give the party its key, then answer its requests until it leaves."""
        party = CLIENT if link.peer_role == "client" else SERVER
        sid = link.session_id
        s = self.join(sid)
        try:
            link.send([np.frombuffer(s["keys"][party], np.uint8)])
            while True:
                msg = link.recv()
                if len(msg) < 2 or msg[0].shape != (1,) or msg[0].dtype != np.int64 or msg[1].dtype != np.int64:
                    raise TransportError(f"malformed request from the {link.peer_role}")
                req = Request.decode(msg[1])
                link.send([s["maker"].correction(int(msg[0][0]), req, msg[2:])])
                s["requests"] += 1
        except TransportError as err:
            log.info("session %s: %s left (%s); %d requests served", sid.hex()[:8], link.peer_role,
                     str(err).splitlines()[0], s["requests"])
        except (ValueError, IndexError, KeyError) as err:
            log.warning("session %s: bad request from the %s: %s", sid.hex()[:8], link.peer_role, err)
        finally:
            link.close()
            self.leave(sid)


def run_dealer(listener, *, tls, timeout_s: float, emulate=None, stop: threading.Event | None = None) -> None:
    """Accept parties until `stop` is set (or forever), one thread per link."""
    service = DealerService()
    stop = stop or threading.Event()
    log.info("dealer listening on %s:%d (%s)", listener.host, listener.port, "TLS" if tls else "plaintext")
    while not stop.is_set():
        try:
            link = listener.accept(peer_role=("client", "server"), session_id=None, version=PROTOCOL_VERSION,
                                   fingerprint=DEALER_FINGERPRINT, timeout_s=1.0, emulate=emulate)
        except PeerTimeout:
            continue
        except TransportError as err:
            log.warning("refused a connection: %s", str(err).splitlines()[0])
            continue
        link.set_timeout(timeout_s)
        threading.Thread(target=service.serve_link, args=(link,), daemon=True).start()
