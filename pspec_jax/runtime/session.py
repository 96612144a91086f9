"""One client–server session over real links: the client's `RemoteSession` and the
server's command loop. Both run the very programs of `SecureSession`, each as its own
party (`mpc.party_context`): the client with its inputs and zeros of the server's
weights' shapes, the server with its weights and zeros of the client's inputs' shapes.

Before each program the client sends the server a command (what to run, with its public
sizes); the server runs the same program, so the two parties' messages pair up. A
command rides ahead of the program's first message: it costs bytes, not a round.

Messages on the client–server link after the transport's handshake:
  client → server: [session (max_len,) int64, k_01 (16 bytes)]
  server → client: [the model's calibrated ranges (6,) float64, the comparison protocol
                   (1,) int64] (`SessionTerms`: both derive the session's MPC config
                   from them, `pspec_jax.secure.ranges.session_config`)
  server → client: the weights' masked values F = W − B (set-up, once per session)
  then per program: client → server [command int64], and the program's own messages.
Each party also holds a link to the dealer, which first sends it its dealer key and then
answers correction requests [nonce int64, request int64, handles…] with [words uint64].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from typing import Any, Callable

import jax
import numpy as np

import mpc
from mpc.dealer import Request
from mpc.prg import KEY_BYTES
from mpc.shares import CLIENT, SERVER
from mpc.transport import TransportError
from pspec_jax.models.config import ModelConfig
from pspec_jax.secure import SecureSession
from pspec_jax.secure.ranges import ModelRanges, session_config

PROTOCOL_VERSION = "pspec/2"  # 2: the set-up names the comparison protocol
DEALER_FINGERPRINT = "dealer"  # the dealer is model-agnostic
PRIVACY_CODES = ("strict", "paper")
CLOSE, FORWARD, ROLLBACK, VERIFY, NEXT_TOKEN, TREE_FORWARD, TREE_VERIFY, KEEP_PATH = range(8)
# Payload bytes of the client's control messages (session request, commands): not the
# protocol's, so not in the ledger; the request (max_len, k_01) once, 8 per command word.
REQUEST_BYTES = 8 + KEY_BYTES


def model_fingerprint(config: ModelConfig) -> str:
    """What both parties must agree on: the private model's public shape (not its weights)."""
    fields = dataclasses.asdict(config)
    return "sha256:" + hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _float_bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def _bits_float(b: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(b)))[0]


@dataclasses.dataclass(frozen=True)
class SessionTerms:
    """What the server fixes for all its sessions and sends in each set-up: the model's
    calibrated ranges and how comparisons run (`mpc.MPCConfig.comparison`: "dcf" trades
    rounds for dealer bytes and compute). Both parties derive the session's MPC config
    from them, so their programs pair up. Public."""

    ranges: ModelRanges
    comparison: str = "kogge-stone"

    def __post_init__(self):
        if self.comparison not in mpc.context.COMPARISONS:
            raise ValueError(f"comparison must be one of {mpc.context.COMPARISONS}, got {self.comparison!r}")

    def mpc_config(self) -> mpc.MPCConfig:
        return dataclasses.replace(session_config(self.ranges), comparison=self.comparison)

    def to_message(self) -> list[np.ndarray]:
        return [self.ranges.to_array(), np.asarray([mpc.context.COMPARISONS.index(self.comparison)], np.int64)]

    @classmethod
    def from_message(cls, msg: list) -> "SessionTerms":
        try:
            ranges, code = msg
            code = np.asarray(code)
            if code.dtype != np.int64 or code.shape != (1,) or not 0 <= code[0] < len(mpc.context.COMPARISONS):
                raise ValueError
            return cls(ModelRanges.from_array(ranges), mpc.context.COMPARISONS[int(code[0])])
        except ValueError:
            raise TransportError("the server sent malformed session terms") from None


# Dealer requests a party keeps on the wire before it reads the first answer: the dealer
# answers a link's requests in order, so a batch of n costs about one round trip, not n;
# the bound keeps the requests in flight (~0.1-10 KB each) well inside the sockets' buffers.
DEALER_PIPELINE = 32


def dealer_fetch(dealer_link) -> Callable:
    """A party's correction requests to the dealer (`mpc.dealer.PartyDealer`'s `fetch`):
    the requests of one call pipelined, at most `DEALER_PIPELINE` unanswered."""

    def answer() -> np.ndarray:
        msg = dealer_link.recv()
        if len(msg) != 1:
            raise TransportError(f"the dealer sent {len(msg)} arrays for a correction, expected 1")
        return msg[0]

    def fetch(requests) -> list[np.ndarray]:
        words: list[np.ndarray] = []
        for sent, (nonce, req, handles) in enumerate(requests):
            if sent - len(words) >= DEALER_PIPELINE:
                words.append(answer())
            dealer_link.send([np.asarray([nonce], np.int64), req.encode(), *[np.asarray(h) for h in handles]])
        while len(words) < len(requests):
            words.append(answer())
        return words

    return fetch


def dealer_key(dealer_link) -> bytes:
    (key,) = dealer_link.recv()
    key = bytes(np.asarray(key, np.uint8))
    if len(key) != KEY_BYTES:
        raise TransportError(f"the dealer sent a {len(key)}-byte key, expected {KEY_BYTES}")
    return key


def zero_params(config: ModelConfig) -> Any:
    """Zeros of the private weights' shapes: what the client passes where the server
    passes its weights (only the shapes are used; the client never holds a weight)."""
    from pspec_jax.models import arch

    shapes = jax.eval_shape(lambda k: arch.init_params(config, k), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), shapes)


def client_setup(link, dealer_link, max_len: int) -> tuple[SessionTerms, dict]:
    """The client's session set-up: asks the server for a cache of `max_len` rows with a
    fresh pairwise key, receives the session's terms; returns them and the client's keys."""
    k01 = os.urandom(KEY_BYTES)
    link.send([np.asarray([max_len], np.int64), np.frombuffer(k01, np.uint8)])
    terms = SessionTerms.from_message(link.recv())
    keys = {CLIENT: dealer_key(dealer_link), "pairwise": k01, ("own", CLIENT): os.urandom(KEY_BYTES)}
    return terms, keys


class RemoteSession(SecureSession):
    """The client's side of a session with a server: `SecureSession`'s interface, every
    call first telling the server which program to run. `restart` runs the next session
    (new links, keys and masks) on the programs this one compiled."""

    def __init__(self, config: ModelConfig, link, dealer_link, max_len: int,
                 setup: tuple[SessionTerms, dict]) -> None:
        """`setup`: the result of `client_setup` on these links."""
        terms, keys = setup
        self.link, self.dealer_link = link, dealer_link
        self.control_bytes = REQUEST_BYTES
        self._zeros = zero_params(config)
        ctx = mpc.party_context(CLIENT, link, keys, dealer_fetch(dealer_link), terms.mpc_config(), split=True)
        super().__init__(config, self._zeros, max_len=max_len, ctx=ctx, pad_widths=True)
        self.terms, self.ranges = terms, terms.ranges

    def restart(self, link, dealer_link, max_len: int, setup: tuple[SessionTerms, dict]) -> None:
        """The next session, with `setup` from `client_setup` on its links (the same
        terms as this one's: the same config, the same programs)."""
        terms, keys = setup
        if terms != self.terms:
            raise ValueError("a session restarts only with the same session terms")
        self.link, self.dealer_link, self.control_bytes = link, dealer_link, REQUEST_BYTES
        mpc.restart_party_context(self.ctx, link, keys, dealer_fetch(dealer_link))
        super().restart(self._zeros, max_len)

    def _command(self, *words) -> None:
        self.link.send([np.asarray(words, np.int64)])
        self.control_bytes += 8 * len(words)

    def forward(self, token_ids, logits_last_only: bool = False, with_logits: bool = True, tree=None):
        if tree is not None:  # the shape and node count are public: the server builds the mask itself
            parents, n_nodes = tree
            self._command(TREE_FORWARD, int(n_nodes), *[int(p) for p in parents])
            return super().forward(token_ids, tree=tree)
        T = int(np.asarray(token_ids).size)
        self._command(FORWARD, T, int(with_logits), int(logits_last_only))
        return super().forward(token_ids, logits_last_only, with_logits)

    def rollback(self, length: int) -> None:
        super().rollback(length)
        self._command(ROLLBACK, int(length))

    def keep_path(self, start: int, path) -> None:
        super().keep_path(start, path)
        self._command(KEEP_PATH, int(start), *[int(c) for c in path])

    def verify(self, logits, drafts, thresholds, q_rows, temperature: float, privacy: str):
        self._command(VERIFY, len(drafts), _float_bits(temperature), PRIVACY_CODES.index(privacy))
        return super().verify(logits, drafts, thresholds, q_rows, temperature, privacy)

    def verify_tree(self, logits, n_nodes: int, tokens, thresholds, q_try, parents, temperature: float,
                    privacy: str):
        self._command(TREE_VERIFY, int(n_nodes), _float_bits(temperature), PRIVACY_CODES.index(privacy),
                      *[int(p) for p in parents])
        return super().verify_tree(logits, n_nodes, tokens, thresholds, q_try, parents, temperature, privacy)

    def next_token(self, logits, temperature: float, op: str = "next_token") -> int:
        self._command(NEXT_TOKEN, _float_bits(temperature))
        return super().next_token(logits, temperature, op=op)

    def close(self) -> None:
        try:
            self._command(CLOSE)
        except TransportError:
            pass
        self.link.close()
        self.dealer_link.close()


class ModelServer:
    """The server's private model across client sessions. All sessions run on one
    `SecureSession` whose party context restarts with each session's links and keys
    (`mpc.restart_party_context`): a session compiles only the pass widths no earlier
    one ran, and with cache rows and prefill widths bucketed the set of programs — and
    the server's memory — stays bounded however many sessions it serves."""

    def __init__(self, config: ModelConfig, params: Any, terms: SessionTerms, max_len_limit: int) -> None:
        self.config, self.params, self.terms, self.max_len_limit = config, params, terms, max_len_limit
        self._session: SecureSession | None = None

    def serve(self, link, dealer_link) -> dict:
        """One session: set-up (the session's terms to the client), then the client's
        commands until it closes. Returns public counts for the log (passes, cache
        length, seconds spent compiling). After a failed session the next one starts on a
        fresh context (its programs load from the persistent compilation cache)."""
        try:
            return self._serve(link, dealer_link)
        except BaseException:
            self._session = None
            raise

    def _serve(self, link, dealer_link) -> dict:
        first = link.recv()
        if len(first) != 2 or first[0].dtype != np.int64 or first[0].shape != (1,) or first[1].size != KEY_BYTES:
            raise TransportError("the client's session request is malformed")
        max_len = int(first[0][0])
        if not 1 <= max_len <= self.max_len_limit:
            raise TransportError(f"the client asks for a cache of {max_len} rows; this server allows "
                                 f"1..{self.max_len_limit}")
        link.send(self.terms.to_message())
        keys = {SERVER: dealer_key(dealer_link), "pairwise": bytes(first[1].astype(np.uint8)),
                ("own", SERVER): os.urandom(KEY_BYTES)}
        fetch = dealer_fetch(dealer_link)
        sess = self._session
        if sess is None:
            ctx = mpc.party_context(SERVER, link, keys, fetch, self.terms.mpc_config(), split=True)
            sess = SecureSession(self.config, self.params, max_len=max_len, ctx=ctx, pad_widths=True)
        else:
            mpc.restart_party_context(sess.ctx, link, keys, fetch)
            sess.restart(self.params, max_len)
        self._session = sess
        compiled_before = sess.ctx.compile_seconds
        counts = _run_commands(sess, link, self.config.vocab_size, max_len)
        return {**counts, "compile_s": sess.ctx.compile_seconds - compiled_before}


def _run_commands(sess: SecureSession, link, V: int, max_len: int) -> dict:
    logits = None
    path = None  # the accepted path the last tree walk opened (the server keeps its own copy)
    passes = 0
    while True:
        msg = link.recv()
        if len(msg) != 1 or msg[0].dtype != np.int64:
            raise TransportError("the client's command is malformed (a protocol message out of step?)")
        cmd = [int(c) for c in msg[0].reshape(-1)]
        if not cmd:
            raise TransportError("empty command")
        op, args = cmd[0], cmd[1:]
        if op == CLOSE:
            return {"passes": passes, "length": sess.length}
        if op == FORWARD and len(args) == 3 and 1 <= args[0] <= max_len:
            out = sess.forward(np.zeros(args[0], np.int32), logits_last_only=bool(args[2]), with_logits=bool(args[1]))
            logits = out if out is not None else logits
            passes += 1
        elif op == ROLLBACK and len(args) == 1:
            sess.rollback(args[0])
        elif op == VERIFY and len(args) == 3 and logits is not None and args[0] == logits.shape[1] - 1 \
                and 0 <= args[2] < len(PRIVACY_CODES):
            g = args[0]
            sess.verify(logits, np.zeros(g, np.int32), np.zeros(g), np.zeros((g + 1, V)), _bits_float(args[1]),
                        PRIVACY_CODES[args[2]])
        elif op == NEXT_TOKEN and len(args) == 1 and logits is not None:
            sess.next_token(logits, _bits_float(args[0]))
        elif op == TREE_FORWARD and 2 <= len(args) <= max_len and 1 <= args[0] < len(args):
            try:
                logits = sess.forward(np.zeros(len(args), np.int32), tree=(tuple(args[1:]), args[0]))
            except ValueError as err:  # a malformed shape (a parent after its child)
                raise TransportError(f"the client's tree is malformed: {err}") from None
            passes += 1
        elif op == TREE_VERIFY and len(args) >= 4 and logits is not None and len(args) - 3 == logits.shape[1] - 1 \
                and 1 <= args[0] <= len(args) - 3 and 0 <= args[2] < len(PRIVACY_CODES):
            M = logits.shape[1]
            path, _ = sess.verify_tree(logits, args[0], np.zeros(M, np.int32), np.zeros(M), np.zeros((M, V)),
                                       tuple(args[3:]), _bits_float(args[1]), PRIVACY_CODES[args[2]])
        elif op == KEEP_PATH and len(args) >= 1 and path is not None and args[1:] == path:
            sess.keep_path(args[0], path)
            path = None
        else:
            raise TransportError(f"unknown or malformed command {cmd[:4]}")


class Watched:
    """A link that remembers its first transport failure: a session that fails reports
    the failed link's own one-line reason (and the server tells its client when the
    dealer's link failed)."""

    def __init__(self, link) -> None:
        self.link, self.failure = link, None

    def __getattr__(self, name):
        return getattr(self.link, name)

    def _watch(self, fn, *args):
        try:
            return fn(*args)
        except TransportError as err:
            self.failure = self.failure or err
            raise

    def send(self, arrays) -> None:
        self._watch(self.link.send, arrays)

    def recv(self) -> list[np.ndarray]:
        return self._watch(self.link.recv)

    def exchange(self, arrays) -> list[np.ndarray]:
        return self._watch(self.link.exchange, arrays)


def failure_of(err: BaseException, *links: Watched) -> BaseException:
    """The transport failure behind `err` (an error of the program it interrupted), or
    `err` itself."""
    for link in links:
        if link is not None and link.failure is not None:
            return link.failure
    return err
