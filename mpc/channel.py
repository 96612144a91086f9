"""How protocol messages travel, and where they are counted.

Protocols never combine the two parties' shares themselves: every value that crosses
from one party to the other goes through a `Channel` method, which is also the one place
that records bytes and rounds in the ledger (CrypTen's communicator pattern). The
in-process `SimChannel` reconstructs the opened values from the stacked shares; a TCP
channel (a later runtime) implements the same methods by sending the local share
and receiving the peer's, so protocol code does not change.

Methods (each is one round, all values in one call travel in that same round):
* `open(op, xs, to=BOTH, bits=64)`: reveal arithmetic sharings (8 B/element per sender)
  and XOR sharings of `bits`-bit words (ceil(elements·bits/8) B per sender).
* `send(op, src, values)`: party `src` sends private values to the other party
  (8 B/element).
* `dealer(op, bytes0, bytes1)`: the dealer's own traffic (no round of the online phase).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from mpc.ledger import Ledger
from mpc.shares import CLIENT, SERVER, Shared, XorShared

BOTH = "both"


def _nbytes(xs, bits: int = 64) -> int:
    return sum(math.ceil(int(x.size) * bits / 8) for x in xs)


class SimChannel:
    """Both parties in one process; counts what a real link would carry."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger if ledger is not None else Ledger()

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

    def open(self, op: str, xs, to=BOTH, bits: int = 64):
        """Reveal sharings in one round: arithmetic (`Shared`, 8 B/element per sender) and
        boolean (`XorShared`, `bits` meaningful bits per word) alike; to both parties, or to
        party `to` only (then only the other party sends)."""
        single = isinstance(xs, (Shared, XorShared))
        xs = [xs] if single else list(xs)
        self._guard(xs)
        nbytes = sum(_nbytes([x], 64 if isinstance(x, Shared) else bits) for x in xs)
        self._record_open(op, nbytes, to)
        out = [x.v[CLIENT] + x.v[SERVER] if isinstance(x, Shared) else x.v[CLIENT] ^ x.v[SERVER] for x in xs]
        return out[0] if single else out

    def send(self, op: str, src: int, values: jax.Array | Sequence[jax.Array], bits: int = 64,
             piggyback: bool = False):
        """Party `src` sends values it holds privately to the other party.

        `piggyback=True`: the values are known before, and travel with, the next message
        `src` sends anyway (e.g. the client's draft-dependent OT offsets ride on the first
        message of the secure pass): bytes are counted, no round is added.
        """
        single = not isinstance(values, (list, tuple))
        vs = [values] if single else list(values)
        self._guard(vs)
        n = _nbytes(vs, bits)
        self.ledger.record(op, n if src == CLIENT else 0, n if src == SERVER else 0, 0 if piggyback else 1)
        vs = [jnp.asarray(v) for v in vs]
        return vs[0] if single else vs

    def dealer(self, op: str, bytes0: int, bytes1: int) -> None:
        self.ledger.record(op, bytes0, bytes1, 0, kind="dealer")

    def setup(self, op: str, bytes0: int, bytes1: int) -> None:
        self.ledger.record(op, bytes0, bytes1, 1, kind="setup")
