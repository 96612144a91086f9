"""Network emulation on a real link, with the ledger's presets (`mpc.ledger.NETWORKS`)."""

from __future__ import annotations

import dataclasses

from mpc.ledger import NETWORKS, NetworkModel, network


@dataclasses.dataclass(frozen=True)
class NetworkEmulation:
    """Delay imposed by the sender: a message of n bytes sent at t is delivered at
    max(t, end of the previous transmission) + 8·n / bandwidth + latency — a serialising
    line per direction whose one-way latency pipelines."""

    latency_s: float
    bandwidth_bps: float

    def __post_init__(self) -> None:
        if self.latency_s < 0 or not self.bandwidth_bps > 0:
            raise ValueError(f"invalid emulation: latency {self.latency_s} s, bandwidth {self.bandwidth_bps} bit/s")

    @classmethod
    def from_model(cls, model: NetworkModel) -> "NetworkEmulation":
        return cls(latency_s=model.latency_s, bandwidth_bps=model.bandwidth_bps)

    @classmethod
    def preset(cls, spec: str) -> "NetworkEmulation":
        """`lan`, `wan`, `dc` (the ledger's NETWORKS) or `custom:<Mbps>:<one-way ms>`."""
        return cls.from_model(network(spec))


PRESETS = {name: NetworkEmulation.from_model(model) for name, model in NETWORKS.items()}
