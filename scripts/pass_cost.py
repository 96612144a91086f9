#!/usr/bin/env python
"""One SmolLM2 secure session per comparison protocol (the default private model, context
64): fidelity of one 8-token pass against plain float32, then T = 1 and T = 8 passes
(median of 2 after a compiling one): compute, split into the offline program (the
dealer's draws and corrections) and the online one (both parties' protocol work, the
simulation runs both), rounds per pass and in layer 0, online and dealer bytes per
party, modelled lan/wan seconds (total compute, and online compute only: the offline
work done ahead). One JSON line per protocol.

    python scripts/pass_cost.py TAG [kogge-stone] [dcf] [--tokens 1 8]
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


def main(tag: str, comparisons: list[str], tokens=(1, 8)) -> None:
    bundle = load_default_private()
    base, _ = calibrated_config(bundle.config, bundle.params, bundle.tokenizer)
    for comparison in comparisons:
        config = dataclasses.replace(base, comparison=comparison)
        session = SecureSession(bundle.config, bundle.params, max_len=80, mpc_config=config,
                                tokenizer=bundle.tokenizer, split=True)
        out = {"code": tag, "comparison": comparison, **fidelity_row(session, bundle, tokens=8)}
        for T in tokens:
            phases: list = []
            _, times, one = time_pass(session, T, 64, 2, phases)
            compute = statistics.median(times)
            online = statistics.median(p[1] for p in phases)
            out[f"T{T}"] = {"compute_s": round(compute, 2),
                            "offline_s": round(statistics.median(p[0] for p in phases), 2),
                            "online_s": round(online, 2), "rounds": one.totals().rounds,
                            "rounds_layer0": sum(e.rounds for e in one.entries
                                                 if e.kind == "online" and e.op.startswith("layer0/")),
                            "online_bytes": one.totals().bytes_per_party,
                            "dealer_bytes": one.totals("dealer").bytes_per_party,
                            "wan_s": round(compute + mpc.network("wan").seconds(one), 1),
                            "lan_s": round(compute + mpc.network("lan").seconds(one), 2),
                            "wan_online_s": round(online + mpc.network("wan").seconds(one), 1),
                            "lan_online_s": round(online + mpc.network("lan").seconds(one), 2)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    tokens = (1, 8)
    if "--tokens" in argv:
        at = argv.index("--tokens")
        tokens = tuple(int(t) for t in argv[at + 1:])
        argv = argv[:at]
    main(argv[0] if argv else "this", argv[1:] or list(mpc.context.COMPARISONS), tokens)
