"""Communication ledger and network cost model.

Every message the protocols exchange is recorded where it happens (in the channel), with
the op label in force, the bytes each party sends and the rounds it costs. A *round* is
one one-way message flight; a simultaneous exchange (both parties send, then both
receive) is one round. Traffic from the dealer is recorded under kind "dealer", one-off
session set-up (a weight's masked value opened once) under kind "setup", and everything
else under kind "online".

Under `mpc.secure_jit` the protocols are traced once per input shape; the entries a trace
records are captured and replayed on every call (they depend only on shapes), so the
ledger counts every execution exactly once.

`NetworkModel` turns a ledger into seconds:
    time = Σ_entries rounds · latency + max(bytes_0, bytes_1) / bandwidth
(links are full duplex, so in an exchange the larger direction decides).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import defaultdict
from typing import Iterator

KINDS = ("online", "setup", "dealer")


@dataclasses.dataclass(frozen=True)
class Entry:
    op: str  # scope path, e.g. "layer3/attn/softmax/exp/mul"
    kind: str  # "online" | "setup" | "dealer"
    bytes0: int  # bytes sent by party 0 (client); for "dealer": bytes the dealer sends to party 0
    bytes1: int  # bytes sent by party 1 (server); for "dealer": bytes the dealer sends to party 1
    rounds: int


@dataclasses.dataclass(frozen=True)
class Totals:
    bytes0: int = 0
    bytes1: int = 0
    rounds: int = 0
    messages: int = 0

    @property
    def bytes_per_party(self) -> int:
        """The larger of the two parties' sent bytes."""
        return max(self.bytes0, self.bytes1)

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(self.bytes0 + other.bytes0, self.bytes1 + other.bytes1,
                      self.rounds + other.rounds, self.messages + other.messages)


class Ledger:
    """Accumulates entries; scopes label them; captures support trace-once replay."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._scope: list[str] = []
        self._captures: list[list[Entry]] = []

    # --- labelling ---------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def label(self, op: str) -> str:
        return "/".join([*self._scope, op])

    # --- recording ---------------------------------------------------------------------
    def record(self, op: str, bytes0: int, bytes1: int, rounds: int, kind: str = "online") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown ledger kind {kind!r}")
        entry = Entry(self.label(op), kind, int(bytes0), int(bytes1), int(rounds))
        (self._captures[-1] if self._captures else self.entries).append(entry)

    @property
    def capturing(self) -> bool:
        return bool(self._captures)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[Entry]]:
        """Collect entries recorded inside the block instead of adding them."""
        captured: list[Entry] = []
        self._captures.append(captured)
        try:
            yield captured
        finally:
            self._captures.pop()

    def extend(self, entries: list[Entry], prefix: str = "") -> None:
        """Add captured entries (one execution of a traced program)."""
        base = "/".join(self._scope)
        pre = "/".join(p for p in (base, prefix) if p)
        for e in entries:
            e = dataclasses.replace(e, op=f"{pre}/{e.op}" if pre else e.op)
            (self._captures[-1] if self._captures else self.entries).append(e)

    def reset(self) -> None:
        self.entries.clear()

    # --- queries -----------------------------------------------------------------------
    def totals(self, kind: str = "online", prefix: str | None = None) -> Totals:
        t = Totals()
        for e in self.entries:
            if e.kind == kind and (prefix is None or e.op.startswith(prefix)):
                t += Totals(e.bytes0, e.bytes1, e.rounds, 1)
        return t

    def by_op(self, kind: str = "online", depth: int | None = None, leaf: bool = False) -> dict[str, Totals]:
        """Totals grouped by op label: its first `depth` path components, or its leaf name."""
        out: dict[str, Totals] = defaultdict(Totals)
        for e in self.entries:
            if e.kind != kind:
                continue
            parts = e.op.split("/")
            key = parts[-1] if leaf else "/".join(parts[:depth] if depth else parts)
            out[key] = out[key] + Totals(e.bytes0, e.bytes1, e.rounds, 1)
        return dict(out)

    def snapshot(self) -> int:
        """A marker; `since(marker)` gives the entries recorded after it."""
        return len(self.entries)

    def since(self, marker: int) -> "Ledger":
        sub = Ledger()
        sub.entries = self.entries[marker:]
        return sub


@dataclasses.dataclass(frozen=True)
class NetworkModel:
    """A link: bandwidth in bits per second and one-way latency in seconds."""

    name: str
    bandwidth_bps: float
    latency_s: float

    def __post_init__(self):
        if self.bandwidth_bps <= 0 or self.latency_s < 0:
            raise ValueError(f"invalid network {self.name}: bandwidth {self.bandwidth_bps}, latency {self.latency_s}")

    def seconds(self, ledger: Ledger, kind: str = "online") -> float:
        """Communication time of the ledger's entries of one kind on this link."""
        return sum(self.entry_seconds(e) for e in ledger.entries if e.kind == kind)

    def entry_seconds(self, e: Entry) -> float:
        return e.rounds * self.latency_s + max(e.bytes0, e.bytes1) * 8.0 / self.bandwidth_bps

    def totals_seconds(self, t: Totals) -> float:
        """Lower bound for aggregated totals (bytes of both directions overlapped)."""
        return t.rounds * self.latency_s + t.bytes_per_party * 8.0 / self.bandwidth_bps


NETWORKS: dict[str, NetworkModel] = {
    "lan": NetworkModel("lan", 1e9, 10e-3),
    "wan": NetworkModel("wan", 400e6, 40e-3),
    "dc": NetworkModel("dc", 5e9, 0.2e-3),
}


def network(spec: str) -> NetworkModel:
    """A preset name (`lan`, `wan`, `dc`) or `custom:<Mbps>:<one-way ms>`."""
    if spec in NETWORKS:
        return NETWORKS[spec]
    if spec.startswith("custom:"):
        try:
            _, mbps, ms = spec.split(":")
            return NetworkModel(spec, float(mbps) * 1e6, float(ms) * 1e-3)
        except ValueError:
            pass
    raise ValueError(f"unknown network {spec!r}: use lan, wan, dc or custom:<Mbps>:<one-way ms>")
