#!/usr/bin/env python
"""One SmolLM2 secure session per comparison protocol (the default private model, context
64): fidelity of one 8-token pass against plain float32, then T = 1 and T = 8 passes
(median of 2 after a compiling one): compute, rounds per pass and in layer 0, online and
dealer bytes per party, modelled lan/wan seconds. One JSON line per protocol.

    python scripts/pass_cost.py TAG [kogge-stone] [dcf]
"""

import dataclasses
import json
import statistics
import sys

import pspec_jax  # noqa: F401  (x64)
import mpc
from pspec_jax.benchmarks.forward import fidelity_row, time_pass
from pspec_jax.models.default import load_default_private
from pspec_jax.secure import SecureSession
from pspec_jax.secure.ranges import calibrated_config


def main(tag: str, comparisons: list[str]) -> None:
    bundle = load_default_private()
    base, _ = calibrated_config(bundle.config, bundle.params, bundle.tokenizer)
    for comparison in comparisons:
        config = dataclasses.replace(base, comparison=comparison)
        session = SecureSession(bundle.config, bundle.params, max_len=80, mpc_config=config,
                                tokenizer=bundle.tokenizer)
        out = {"code": tag, "comparison": comparison, **fidelity_row(session, bundle, tokens=8)}
        for T in (1, 8):
            _, times, one = time_pass(session, T, 64, 2)
            compute = statistics.median(times)
            out[f"T{T}"] = {"compute_s": round(compute, 2), "rounds": one.totals().rounds,
                            "rounds_layer0": sum(e.rounds for e in one.entries
                                                 if e.kind == "online" and e.op.startswith("layer0/")),
                            "online_bytes": one.totals().bytes_per_party,
                            "dealer_bytes": one.totals("dealer").bytes_per_party,
                            "wan_s": round(compute + mpc.network("wan").seconds(one), 1),
                            "lan_s": round(compute + mpc.network("lan").seconds(one), 2)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this", sys.argv[2:] or list(mpc.context.COMPARISONS))
