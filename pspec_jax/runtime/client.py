"""The client of a real run: its prompt, its drafter and its randomness stay here; the
private model is the server's. `Client(...).generate(...)` runs standard secure decoding
or POST with the server and the dealer over TLS — the same decoding loops as the
simulation (`decode.secure`, `decode.post`), with a `RemoteSession` in place of the
simulated one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from mpc.transport import TlsConfig, TransportError, connect
from pspec_jax.decode.common import GenerationResult, OnTokens
from pspec_jax.decode.sampling import Sampling
from pspec_jax.errors import UserError
from pspec_jax.models.config import ModelConfig
from pspec_jax.runtime.session import (DEALER_FINGERPRINT, PROTOCOL_VERSION, RemoteSession, Watched,
                                       client_setup, failure_of, model_fingerprint)


def cache_bucket(rows: int, limit: int) -> int:
    """Cache rows rounded up to a power of two (at least 64), at most `limit`: a server
    compiles one set of programs per bucket, not per prompt length."""
    b = 64
    while b < rows:
        b *= 2
    return min(b, limit)


@dataclasses.dataclass
class PublicModel:
    """What the client knows of the private model: its public shape (and a tokenizer
    shared with its drafter). `params` is None: the client never holds a weight."""

    config: ModelConfig
    tokenizer: Any = None
    name: str = "private"
    params: Any = None


class Client:
    """A client of a pspec server and dealer. Successive `generate` calls with the same
    private model reuse the programs the first one compiled (a new session each: new
    links, keys and masks)."""

    def __init__(self, server: tuple[str, int], dealer: tuple[str, int], *, tls: str | None = None,
                 timeout_s: float = 300.0, emulate=None, emulate_dealer=None) -> None:
        """`emulate`: the shaping of messages to the server; `emulate_dealer`: to the
        dealer (`mpc.transport.NetworkEmulation`, None = as they come)."""
        self.server, self.dealer, self.timeout_s = server, dealer, timeout_s
        self.emulate, self.emulate_dealer = emulate, emulate_dealer
        self.tls = TlsConfig.from_dir(tls, "client") if tls else None
        self.stats: dict[str, Any] = {}
        self._session: RemoteSession | None = None  # the last session, for its programs

    def _open(self, private: PublicModel, max_len: int) -> RemoteSession:
        sid = os.urandom(16)
        common = dict(role="client", tls=self.tls, session_id=sid, version=PROTOCOL_VERSION,
                      timeout_s=self.timeout_s)
        link = Watched(connect(*self.server, peer_role="server", fingerprint=model_fingerprint(private.config),
                               emulate=self.emulate, **common))
        try:
            dealer_link = Watched(connect(*self.dealer, peer_role="dealer", fingerprint=DEALER_FINGERPRINT,
                                          emulate=self.emulate_dealer, **common))
        except TransportError:
            link.close()
            raise
        try:  # the session's set-up already talks to both peers (weights, dealer key)
            setup = client_setup(link, dealer_link, max_len)
            last = self._session
            if last is not None and last.config == private.config and last.terms == setup[0]:
                last.restart(link, dealer_link, max_len, setup)
                return last
            self._session = RemoteSession(private.config, link, dealer_link, max_len, setup)
            return self._session
        except Exception as err:  # noqa: BLE001 - report the link's own failure, not XLA's wrapper
            self._session = None
            reason = failure_of(err, link, dealer_link)
            link.close()
            dealer_link.close()
            if isinstance(reason, TransportError):
                raise reason from None
            raise

    def generate(self, private: PublicModel, prompt_ids: list[int], *, mode: str = "post", drafter=None,
                 max_new_tokens: int = 32, gamma: int = 4, sampling: Sampling = Sampling(),
                 privacy: str = "strict", eos_id: int | None = None, on_tokens: OnTokens | None = None,
                 seed: int | None = None, tree: int | None = None, adaptive: bool = False) -> GenerationResult:
        """Secure (`mode="secure"`) or POST (`mode="post"`, with the public `drafter`)
        decoding of the server's private model; see `generate_secure` / `generate_post`.
        A lost peer raises UserError with one line."""
        from pspec_jax.decode.post import generate_post
        from pspec_jax.decode.secure import generate_secure

        if mode not in ("secure", "post"):
            raise UserError(f"a client runs mode secure or post, not {mode!r}")
        ctx_len = private.config.max_seq_len
        lookahead = (gamma if tree is None else tree) + 1 if mode == "post" else 0
        rows = cache_bucket(len(prompt_ids) + max_new_tokens + lookahead, ctx_len)
        session = None
        try:
            session = self._open(private, rows)
            if mode == "post":
                res = generate_post(private, drafter, prompt_ids, max_new_tokens, gamma, sampling, privacy,
                                    eos_id, on_tokens, seed=seed, session=session, tree=tree, adaptive=adaptive)
            else:
                res = generate_secure(private, prompt_ids, max_new_tokens, sampling, eos_id, on_tokens,
                                      session=session)
            self.stats = {"bytes_written": {"server_link": session.link.stats.bytes_wire_sent,
                                            "dealer_link": session.dealer_link.stats.bytes_wire_sent},
                          "payload_written": {"server_link": session.link.stats.bytes_payload_sent,
                                              "dealer_link": session.dealer_link.stats.bytes_payload_sent},
                          "control_bytes": session.control_bytes}
            return res
        except UserError:
            self._session = None  # its programs may have stopped mid-way: the next session compiles anew
            raise
        except Exception as err:  # noqa: BLE001 - a lost peer or dealer, as one line
            self._session = None
            reason = failure_of(err, *(() if session is None else (session.link, session.dealer_link)))
            if isinstance(reason, TransportError):
                raise UserError(str(reason).strip().splitlines()[0]) from None
            raise
        finally:
            if session is not None:
                session.close()
