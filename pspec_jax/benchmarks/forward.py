"""`pspec bench forward`: one secure pass of the private model over T new tokens at a
fixed context, T = 1, 2, 4, 8, 16 — the cost curve POST rests on.

The cache is set to the context length without running a prefill: a pass's compute,
bytes and rounds depend only on shapes, never on the cached values, so this measures
exactly the pass a decoding step runs. Each T is compiled by a warm-up pass first; the
figures are the median of `repeats` passes (ledger of one pass).
"""

from __future__ import annotations

import dataclasses

import statistics
import time
from pathlib import Path

import jax.numpy as jnp

import mpc

TOKENS = (1, 2, 4, 8, 16)


def time_pass(session, T: int, context: int, repeats: int,
              phases: list | None = None) -> tuple[float, list[float], "mpc.Ledger"]:
    """One secure pass over T new tokens with the cache at `context` rows, run
    `repeats` + 1 times (rolled back to `context` before each). Returns the seconds of the
    first (compiling) pass, the seconds of the `repeats` later ones, and the ledger of one
    pass (identical for every call: it depends only on shapes). A split session
    (`mpc.Context(split=True)`) appends each later pass's (offline, online) seconds to
    `phases`."""
    ids = jnp.arange(T, dtype=jnp.int32) % session.config.vocab_size
    first, times = 0.0, []
    for i in range(repeats + 1):
        session.rollback(0)
        session.cache = session.cache.rollback(context)
        mark = session.ledger.snapshot()
        before = dict(session.ctx.phase_seconds)
        t0 = time.perf_counter()
        session.forward(ids)
        if i:  # the first pass compiles
            times.append(time.perf_counter() - t0)
            if phases is not None:
                phases.append(tuple(session.ctx.phase_seconds[k] - before[k] for k in ("offline", "online")))
        else:
            first = time.perf_counter() - t0
    return first, times, session.ledger.since(mark)


def fidelity_row(session, bundle, tokens: int = 8) -> dict:
    """One secure pass over `tokens` prompt tokens from an empty cache, against the plain
    forward in float32: the largest absolute logit error and top-1 agreement."""
    import numpy as np

    from pspec_jax.models import arch

    ids = (np.arange(tokens, dtype=np.int32) * 7919) % bundle.config.vocab_size
    ids[0] = 0  # the first token: massive activations in `shaped_model`s
    want = np.asarray(arch.forward(bundle.config, bundle.params, jnp.asarray(ids)[None])[0])
    session.rollback(0)
    got = np.asarray(session.ctx.reveal(session.forward(ids)))
    session.rollback(0)
    return {"model": bundle.name, "T": tokens, "max_abs_logit_err": float(np.abs(got - want).max()),
            "top1_agree": float((got.argmax(-1) == want.argmax(-1)).mean()),
            "logit_spread": float(np.ptp(want, axis=-1).max())}


def forward_rows(bundle, context: int = 64, tokens=TOKENS, repeats: int = 3, session=None) -> list[dict]:
    from pspec_jax.secure import SecureSession

    session = session or SecureSession(bundle.config, bundle.params, max_len=context + max(tokens),
                                       tokenizer=bundle.tokenizer)
    rows = []
    for T in tokens:
        phases: list = []
        _, times, one = time_pass(session, T, context, repeats, phases)
        t = one.totals()
        compute = statistics.median(times)
        split = {}
        if session.ctx.split:  # the dealer's work (offline) apart from the parties' (online)
            split = {"offline_s": statistics.median(p[0] for p in phases),
                     "online_s": statistics.median(p[1] for p in phases)}
        rows.append({"T": T, "compute_s": compute, **split, "bytes_per_party": t.bytes_per_party,
                     "rounds": t.rounds, "dealer_bytes_per_party": one.totals("dealer").bytes_per_party,
                     "lan_s": compute + mpc.network("lan").seconds(one),
                     "wan_s": compute + mpc.network("wan").seconds(one)})
    base = rows[0]
    for r in rows:
        for k in ("compute_s", "bytes_per_party", "lan_s", "wan_s"):
            r[f"{k}/T1"] = r[k] / base[k]
    return rows


def plot(rows: list[dict], path: Path, model: str = "SmolLM2-135M") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = [r["T"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("compute_s/T1", "compute"), ("bytes_per_party/T1", "bytes"),
                       ("lan_s/T1", "lan time"), ("wan_s/T1", "wan time")):
        ax.plot(T, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("new tokens in the pass (T)")
    ax.set_ylabel("cost relative to T = 1")
    ax.set_title(f"Secure pass cost vs tokens ({model}, context 64)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def run_bench(args) -> dict:
    from pspec_jax.models.default import resolve_private
    from pspec_jax.models.bundle import shaped_model
    from pspec_jax.secure import SecureSession
    from pspec_jax.secure.ranges import calibrated_config
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

    context = 64
    tokens = (1, 2, 4) if args.quick else TOKENS
    if getattr(args, "shape", None):
        bundle = shaped_model(args.shape, max_seq_len=context + max(tokens))
    else:
        bundle = resolve_private(getattr(args, "private", None))
    config, ranges = calibrated_config(bundle.config, bundle.params, bundle.tokenizer,
                                       base=dataclasses.replace(DEFAULT_MPC_CONFIG,
                                                                comparison=getattr(args, "comparison", "kogge-stone")))
    session = SecureSession(bundle.config, bundle.params, max_len=context + max(tokens), mpc_config=config,
                            tokenizer=bundle.tokenizer, split=True)
    session.ranges = ranges
    fidelity = fidelity_row(session, bundle)
    rows = forward_rows(bundle, context, tokens, repeats=args.repeats if args.repeats < 5 else 3, session=session)
    png = plot(rows, Path(getattr(args, "out", None) or "out") / "forward_cost.png", bundle.name)
    calibration = session.calibration() or {}
    ranges = {**calibration.pop("measured", {}), **calibration}
    return {"forward": rows, "fidelity": [fidelity], "ranges": [ranges],
            "plot": [{"path": str(png)}]}
