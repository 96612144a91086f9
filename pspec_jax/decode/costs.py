"""Cost reports of secure decoding: compute, bytes, rounds and modelled network time.

A report covers a slice of a session's ledger (e.g. prefill, or the decode steps) plus the
wall-clock compute seconds spent in it. Modelled seconds for a preset are
compute + Σ rounds · latency + Σ max(bytes_0, bytes_1) / bandwidth (see `mpc.ledger`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mpc


@dataclasses.dataclass
class CostReport:
    compute_s: float
    online: mpc.ledger.Totals
    dealer: mpc.ledger.Totals
    modeled_s: dict[str, float]
    secure_passes: int = 0

    @classmethod
    def of(cls, ledger: mpc.Ledger, compute_s: float, secure_passes: int,
           networks=("lan", "wan", "dc")) -> "CostReport":
        modeled = {n: compute_s + mpc.network(n).seconds(ledger) for n in networks}
        return cls(compute_s, ledger.totals("online"), ledger.totals("dealer"), modeled, secure_passes)

    def to_json(self, tokens: int | None = None) -> dict[str, Any]:
        d = {"secure_passes": self.secure_passes, "compute_s": round(self.compute_s, 4),
             "bytes_per_party": self.online.bytes_per_party, "bytes_client": self.online.bytes0,
             "bytes_server": self.online.bytes1, "rounds": self.online.rounds,
             "dealer_bytes": self.dealer.bytes0 + self.dealer.bytes1,
             "modeled_s": {k: round(v, 4) for k, v in self.modeled_s.items()}}
        if tokens:
            d["per_token"] = {"compute_s": round(self.compute_s / tokens, 4),
                              "bytes_per_party": self.online.bytes_per_party // tokens,
                              "rounds": round(self.online.rounds / tokens, 2),
                              "modeled_s": {k: round(v / tokens, 4) for k, v in self.modeled_s.items()}}
        return d


def profile(ledger: mpc.Ledger) -> dict[str, Any]:
    """Online bytes and rounds per op type (leaf label) and per layer (first label)."""
    by_leaf = ledger.by_op(leaf=True)
    by_top = ledger.by_op(depth=1)
    fmt = lambda t: {"bytes_per_party": t.bytes_per_party, "rounds": t.rounds, "messages": t.messages}  # noqa: E731
    return {"by_op": {k: fmt(v) for k, v in sorted(by_leaf.items(), key=lambda kv: -kv[1].bytes_per_party)},
            "by_layer": {k: fmt(v) for k, v in by_top.items()}}


def format_costs(report: dict[str, Any], title: str) -> str:
    """A small text table of a `CostReport.to_json()` dict (total and per token)."""
    rows = [("secure passes", report["secure_passes"], ""),
            ("compute s", report["compute_s"], report.get("per_token", {}).get("compute_s", "")),
            ("bytes per party", f"{report['bytes_per_party']:,}",
             f"{report.get('per_token', {}).get('bytes_per_party', 0):,}" if "per_token" in report else ""),
            ("rounds", report["rounds"], report.get("per_token", {}).get("rounds", ""))]
    for net, s in report["modeled_s"].items():
        rows.append((f"modelled s ({net})", s, report.get("per_token", {}).get("modeled_s", {}).get(net, "")))
    w = max(len(r[0]) for r in rows)
    out = [f"{title}", f"  {'':{w}}  {'total':>14}  {'per token':>12}"]
    out += [f"  {name:{w}}  {str(total):>14}  {str(per):>12}" for name, total, per in rows]
    return "\n".join(out)
