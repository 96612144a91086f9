"""The server process: holds the private model and serves client sessions one after
another. Per session it joins the dealer with the client's session id, prepares its
weights under fresh masks, and runs the client's commands (`runtime.session`) on the
programs earlier sessions compiled (`ModelServer`). A client
that fails or leaves ends only its own session. The log has one line per session —
counts and reasons, never a prompt, a token or a value.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from mpc.transport import PeerTimeout, TransportError, connect
from pspec_jax.runtime.session import (DEALER_FINGERPRINT, PROTOCOL_VERSION, Watched, failure_of,
                                       ModelServer, model_fingerprint)

log = logging.getLogger("pspec.server")


def run_server(listener, dealer: tuple[str, int], config, params: Any, terms, *, tls, dealer_tls, timeout_s: float,
               max_len: int, emulate=None, emulate_dealer=None, max_sessions: int | None = None) -> int:
    """Serve sessions until `max_sessions` have ended (or forever). `terms`: the model's
    calibration (`pspec_jax.secure.ranges.measure`) and the comparison protocol
    (`pspec_jax.runtime.session.SessionTerms`), sent to every client. Returns how
    many sessions ended cleanly."""
    fp = model_fingerprint(config)
    model = ModelServer(config, params, terms, max_len)
    served = ok = 0
    log.info("server listening on %s:%d (%s); model %s", listener.host, listener.port,
             "TLS" if tls else "plaintext", fp)
    while max_sessions is None or served < max_sessions:
        try:
            link = listener.accept(peer_role="client", session_id=None, version=PROTOCOL_VERSION, fingerprint=fp,
                                   timeout_s=1.0, emulate=emulate)
        except PeerTimeout:
            continue
        except TransportError as err:
            log.warning("refused a client: %s", str(err).splitlines()[0])
            continue
        link.set_timeout(timeout_s)
        sid, t0, dealer_link, why = link.session_id.hex()[:8], time.perf_counter(), None, None
        served += 1
        client = Watched(link)
        try:
            dealer_link = Watched(connect(*dealer, role="server", peer_role="dealer", tls=dealer_tls,
                                          session_id=link.session_id, version=PROTOCOL_VERSION,
                                          fingerprint=DEALER_FINGERPRINT, timeout_s=timeout_s,
                                          emulate=emulate_dealer))
            counts = model.serve(client, dealer_link)
            ok += 1
            log.info("session %s: done, %d secure passes, cache length %d, %.1f s (%.1f s compiling), "
                     "%d bytes sent to the client", sid, counts["passes"], counts["length"],
                     time.perf_counter() - t0, counts["compile_s"], link.stats.bytes_wire_sent)
        except Exception as err:  # noqa: BLE001 - one line per failed session, keep serving
            reason = failure_of(err, client, dealer_link)
            line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
            log.warning("session %s: dropped after %.1f s: %s", sid, time.perf_counter() - t0, line)
            if dealer_link is not None and dealer_link.failure is not None:
                why = f"its link to the dealer failed ({line})"  # a transport error: public
        finally:
            link.close(reason=why)
            if dealer_link is not None:
                dealer_link.close()
    return ok
