"""How protocol messages travel, and where they are counted.

Protocols never combine the two parties' shares themselves: every value that crosses
from one party to the other goes through a `Channel` method, which is also the one place
that records bytes and rounds in the ledger (CrypTen's communicator pattern). The
in-process `SimChannel` reconstructs the opened values from the stacked shares; a TCP
channel (a later runtime) implements the same methods by sending the local share
and receiving the peer's, so protocol code does not change.

Methods (each is one round, all values in one call travel in that same round):
* `open(op, xs, to=BOTH, bits=64, ring_bits=64)`: reveal arithmetic sharings mod
  2^ring_bits (⌈elements·ring_bits/8⌉ B per sender; 8 B/element by default) and XOR
  sharings of `bits`-bit words (⌈elements·bits/8⌉ B per sender).
* `send(op, src, make, like)`: party `src` sends private values to the other party
  (8 B/element).
* `dealer(op, bytes0, bytes1)`: the dealer's own traffic (no round of the online phase).
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from jax.experimental import io_callback

from mpc.ledger import Ledger
from mpc.ring import DTYPE
from mpc.shares import CLIENT, SERVER, Shared, XorShared

BOTH = "both"


def _nbytes(xs, bits: int = 64) -> int:
    return sum(math.ceil(int(x.size) * bits / 8) for x in xs)


def _low(bits: int) -> np.uint64:
    """The mask of a word's low `bits` bits."""
    return np.uint64(2**64 - 1) if bits >= 64 else np.uint64((1 << bits) - 1)


class Rider:
    """One round of a protocol whose opening travels in another protocol's message
    (`Channel.open(..., riders=)`): its payload (sharings, or (sharing, width) items,
    opened to both) and how it finishes from the opened values; `result` after landing."""

    def __init__(self, payload: list, finish) -> None:
        self.payload, self._finish, self.result = list(payload), finish, None

    def land(self, opened) -> None:
        self.result = self._finish(opened)


class SimChannel:
    """Both parties in one process; counts what a real link would carry.

    `parties` are the parties whose programs run here: both in simulation. A party
    process's channel (`mpc.runtime.party.PartyChannel`) keeps the same methods with its
    own share only and the peer's message from a socket.
    """

    parties: tuple[int, ...] = (CLIENT, SERVER)

    dry = False  # `mpc.secure_jit`'s offline trace: nothing is sent, openings read as zeros

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger if ledger is not None else Ledger()

    @contextlib.contextmanager
    def dry_run(self):
        """While tracing: no message is sent or received (no host effect); an opening or a
        received value reads as zeros. The offline program of `mpc.secure_jit` traces the
        protocol this way: it keeps only the dealer's draws, which never depend on the
        values a protocol opens."""
        self.dry = True
        try:
            yield
        finally:
            self.dry = False

    @staticmethod
    def _zeros(items) -> list[jax.Array]:
        return [jnp.zeros(x.shape, DTYPE) for x, _, _ in items]

    def _guard(self, xs) -> None:
        if not self.ledger.capturing and any(isinstance(getattr(x, "v", x), jax.core.Tracer) for x in xs):
            raise RuntimeError(
                "a protocol was traced outside mpc.secure_jit: its communication would be counted once "
                "per trace instead of once per call; wrap the function with mpc.secure_jit")

    def _record_open(self, op: str, nbytes: int, to) -> None:
        if to == BOTH:
            self.ledger.record(op, nbytes, nbytes, 1)
        elif to == CLIENT:
            self.ledger.record(op, 0, nbytes, 1)
        elif to == SERVER:
            self.ledger.record(op, nbytes, 0, 1)
        else:
            raise ValueError(f"open: `to` must be 'both', 0 or 1, got {to!r}")

    def open(self, op: str, xs, to=BOTH, bits: int = 64, ring_bits: int = 64, riders=()):
        """Reveal sharings in one round: arithmetic (`Shared`) modulo 2^ring_bits (each
        party sends its share's low `ring_bits` bits; ⌈elements·ring_bits/8⌉ B per sender,
        8 B/element at the default 64) and boolean (`XorShared`, the low `bits` bits of
        each word; ⌈elements·bits/8⌉ B per sender) alike; to both parties, or to party `to`
        only (then only the other party sends). Opened values are reduced to their width.
        An item given as (sharing, width) is opened at that width instead. `riders`:
        other protocols' one-round steps (`Rider`) whose openings travel in the same
        message (to both); each gets its opened values and keeps its result. A party that
        receives nothing gets zeros of the same shape (never use them).
        """
        for width in (bits, ring_bits):
            if not 1 <= width <= 64:
                raise ValueError(f"open: widths must be in [1, 64], got bits={bits}, ring_bits={ring_bits}")
        single = isinstance(xs, (Shared, XorShared))
        xs = [xs] if single else list(xs)
        own = len(xs)
        if riders and to != BOTH:
            raise ValueError("open: riders travel only in openings to both parties")
        for rider in riders:
            xs += rider.payload
        # an item may name its own width: (sharing, width) — e.g. a DCF's x̂ riding along
        items = [x if isinstance(x, tuple) else (x, ring_bits if isinstance(x, Shared) else bits) for x in xs]
        for _, width in items:
            if not 1 <= width <= 64:
                raise ValueError(f"open: widths must be in [1, 64], got {width}")
        xs = [x for x, _ in items]
        self._guard(xs)
        nbytes = sum(_nbytes([x], width) for x, width in items)
        self._record_open(op, nbytes, to)
        items = [(x, isinstance(x, Shared), _low(width)) for x, width in items]
        out = self._zeros(items) if self.dry else self._combine(items, to)
        at = own
        for rider in riders:
            rider.land(out[at:at + len(rider.payload)])
            at += len(rider.payload)
        out = out[:own]
        return out[0] if single else out

    def _combine(self, items, to) -> list[jax.Array]:
        return [(x.share(CLIENT) + x.share(SERVER) if arith else x.share(CLIENT) ^ x.share(SERVER)) & low
                for x, arith, low in items]

    def send(self, op: str, src: int, make, like, bits: int = 64, piggyback: bool = False,
             kind: str = "online"):
        """Party `src` sends values it holds privately to the other party.

        `make()` computes them (run by `src` only); `like` is their shape/dtype (a
        `jax.ShapeDtypeStruct` or a list of them) so that the receiver knows what arrives.
        `piggyback=True`: the values are known before, and travel with, the next message
        `src` sends anyway (e.g. the client's draft-dependent OT offsets ride on the first
        message of the secure pass): bytes are counted, no round is added. `kind="setup"`
        counts a session set-up message (a weight's masked value).
        """
        single = not isinstance(like, (list, tuple))
        likes = [like] if single else list(like)
        n = _nbytes(likes, bits)
        self.ledger.record(op, n if src == CLIENT else 0, n if src == SERVER else 0, 0 if piggyback else 1,
                           kind=kind)
        if self.dry:
            vs = [jnp.zeros(lk.shape, lk.dtype) for lk in likes]
        else:
            vs = make()
            vs = [vs] if single else list(vs)
            self._guard(vs)
            vs = [jnp.asarray(v) for v in vs]
        return vs[0] if single else vs

    def dealer(self, op: str, bytes0: int, bytes1: int) -> None:
        self.ledger.record(op, bytes0, bytes1, 0, kind="dealer")


# --- one party's end of a real link ------------------------------------------------------------
def pack_words(words: np.ndarray, bits: int) -> np.ndarray:
    """The low `bits` bits of each uint64 word, bit-packed: ⌈n·bits/8⌉ bytes (what the
    ledger counts for an opening of `bits`-bit words). Layout, for bits = 8q + r: each
    word's low q bytes (little-endian, word after word), then the next r bits of every
    word, packed little-endian — byte copies for the bulk, bit work only for r < 8 bits
    per word (bit by bit, the host's packing cost more than a pass's compute)."""
    words = np.ascontiguousarray(words, np.uint64).reshape(-1)
    if bits >= 64:
        return words.view(np.uint8)
    q, r = divmod(bits, 8)
    as_bytes = words.view(np.uint8).reshape(-1, 8)
    aligned = np.ascontiguousarray(as_bytes[:, :q]).reshape(-1)
    if not r:
        return aligned
    top = as_bytes[:, q]
    rest = (top & 1 if r == 1 else
            np.unpackbits(top[:, None], axis=1, bitorder="little")[:, :r].reshape(-1))
    return np.concatenate([aligned, np.packbits(rest, bitorder="little")])


def unpack_words(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of `pack_words` for n words."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    if bits >= 64:
        return packed.view(np.uint64)[:n].copy()
    q, r = divmod(bits, 8)
    out = np.zeros((n, 8), np.uint8)
    out[:, :q] = packed[:n * q].reshape(n, q)
    if r:
        rest = np.unpackbits(packed[n * q:], count=n * r, bitorder="little").reshape(n, r)
        out[:, q] = np.packbits(rest, axis=1, bitorder="little")[:, 0]
    return out.view(np.uint64).reshape(n)


def _to_words(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.int64).astype(np.uint64) if x.dtype != np.uint64 else x


class PartyChannel(SimChannel):
    """Party `me`'s end of the client–server link: opens send its own share and receive
    the peer's; sends go over the wire. The same ledger entries as the simulation; every
    payload is bit-packed to exactly the bytes the ledger counts (framing aside).

    `link` is any object with `send(list_of_arrays)`, `recv() -> list_of_arrays` and
    `exchange(list_of_arrays) -> list_of_arrays` (`mpc.transport.Link`, or `MemoryLink`
    for in-process tests). Inside a compiled program each message is an ordered host
    callback, so messages leave in program order.
    """

    def __init__(self, ledger: Ledger, link, me: int) -> None:
        super().__init__(ledger)
        if me not in (CLIENT, SERVER):
            raise ValueError(f"party must be 0 or 1, got {me}")
        self.link, self.me = link, me
        self.parties = (me,)

    def rebind(self, link, ledger: Ledger) -> None:
        """The next session's link and ledger (see `mpc.restart_party_context`). Compiled
        programs reach the link through this object when they run, so they stay valid."""
        self.link, self.ledger = link, ledger

    def _host(self, fn, likes, *args):
        if not likes:  # a send: an ordered effect with a token result
            def effect(*a):
                fn(*a)
                return np.zeros((), np.int32)

            io_callback(effect, jax.ShapeDtypeStruct((), jnp.int32), *args, ordered=True)
            return []
        return io_callback(fn, likes, *args, ordered=True)

    def _combine(self, items, to) -> list[jax.Array]:
        me, peer = self.me, 1 - self.me
        own = [x.share(me) for x, _, _ in items]
        likes = [jax.ShapeDtypeStruct(x.shape, DTYPE) for x, _, _ in items]
        specs = [(int(np.prod(x.shape, dtype=np.int64)), int(low).bit_length()) for x, _, low in items]
        receive, send = to in (BOTH, me), to in (BOTH, peer)

        def host(*shares):
            msg = [pack_words(np.asarray(s), bits) for s, (n, bits) in zip(shares, specs)]
            if send and receive:
                got = self.link.exchange(msg)
            elif send:
                self.link.send(msg)
                return [np.zeros(lk.shape, np.uint64) for lk in likes]
            else:
                got = self.link.recv()
            if len(got) != len(specs):
                raise ConnectionError(f"peer sent {len(got)} arrays, expected {len(specs)}")
            return [unpack_words(g, n, bits).reshape(lk.shape) for g, (n, bits), lk in zip(got, specs, likes)]

        peers = self._host(host, likes, *own)
        out = []
        for (x, arith, low), mine, theirs in zip(items, own, peers):
            if not receive:
                out.append(theirs)
            else:
                out.append((mine + theirs if arith else mine ^ theirs) & low)
        return out

    def send(self, op: str, src: int, make, like, bits: int = 64, piggyback: bool = False,
             kind: str = "online"):
        single = not isinstance(like, (list, tuple))
        likes = [like] if single else list(like)
        n = _nbytes(likes, bits)
        self.ledger.record(op, n if src == CLIENT else 0, n if src == SERVER else 0, 0 if piggyback else 1,
                           kind=kind)
        sizes = [int(np.prod(lk.shape, dtype=np.int64)) for lk in likes]
        if self.dry:
            vs = [jnp.zeros(lk.shape, lk.dtype) for lk in likes]
        elif src == self.me:
            vs = make()
            vs = [jnp.asarray(v) for v in ([vs] if single else vs)]
            self._guard(vs)
            self._host(lambda *a: self.link.send([pack_words(_to_words(v), bits) for v in a]), [], *vs)
        else:
            def host():
                got = self.link.recv()
                if len(got) != len(likes):
                    raise ConnectionError(f"peer sent {len(got)} arrays, expected {len(likes)}")
                return [unpack_words(g, k, bits).astype(np.int64).astype(lk.dtype).reshape(lk.shape)
                        if lk.dtype != np.uint64 else unpack_words(g, k, bits).reshape(lk.shape)
                        for g, k, lk in zip(got, sizes, likes)]

            vs = self._host(host, likes)
        return vs[0] if single else list(vs)


class MemoryLink:
    """An in-process link (a pair of queues) with the transport's interface: two parties'
    programs in one process, each holding only its own shares (tests of the party-local
    code; SPU's in-memory link). `MemoryLink.pair()` returns both ends."""

    def __init__(self, inbox, outbox, timeout_s: float = 60.0) -> None:
        self._in, self._out, self.timeout_s = inbox, outbox, timeout_s
        self.bytes_sent = 0

    @classmethod
    def pair(cls, timeout_s: float = 60.0) -> tuple["MemoryLink", "MemoryLink"]:
        import queue

        a, b = queue.Queue(), queue.Queue()
        return cls(a, b, timeout_s), cls(b, a, timeout_s)

    def send(self, arrays) -> None:
        arrays = [np.array(a, copy=True) for a in arrays]
        self.bytes_sent += sum(a.nbytes for a in arrays)
        self._out.put(arrays)

    def recv(self) -> list[np.ndarray]:
        import queue

        try:
            return self._in.get(timeout=self.timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no message from the peer within {self.timeout_s:g} s") from None

    def exchange(self, arrays) -> list[np.ndarray]:
        self.send(arrays)
        return self.recv()
