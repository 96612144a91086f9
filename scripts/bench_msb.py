#!/usr/bin/env python
"""msb side by side: the Kogge–Stone circuit against the one-round DCF protocol
(`MPCConfig.comparison`), at n = 16, 32, 64 examined bits on N elements.

Per row: online rounds, online bytes per party and dealer bytes per party (the larger
party's, from the ledger of one call), and compute seconds (median of --repeats calls
after a compiling call) of the simulation, which runs both parties — and, for the DCF,
the dealer's key generation, in-graph. For the DCF the split is also shown: the
dealer's key generation and one party's evaluation alone (a party process's online
compute), timed on the same jitted functions the protocol traces.

  python scripts/bench_msb.py [--bits 16 32 64] [--count 4096] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

import mpc
from mpc import dcf
from mpc.protocols import nonlinear as NL
from pspec_jax.benchmarks.mpc import dcf_bench_words, median_seconds


def _split_seconds(bits: int, count: int, repeats: int) -> tuple[float, float]:
    """(dealer keygen, one party's eval) seconds for the DCF material of `msb_dcf`."""
    roots, words = dcf_bench_words(b"bench-msb", count, 2)
    mask = np.uint64((1 << bits) - 1 if bits < 64 else 2**64 - 1)
    r, x_hat = words[0] & mask, words[1] & mask
    keygen = jax.jit(lambda rw, rr: dcf.msb_keygen(rw, rr, n_bits=bits, out_bits=1))
    key0, _ = keygen(roots, r)
    evaluate = jax.jit(lambda k, xh: dcf.msb_from_opened(0, k, xh, n_bits=bits, out_bits=1))
    return median_seconds(lambda: keygen(roots, r), repeats), median_seconds(lambda: evaluate(key0, x_hat), repeats)


def bench(bits: int, count: int, repeats: int) -> list[dict]:
    rows = []
    # ring values spread over the whole n-bit range (every one exact at n bits)
    x = np.random.default_rng(bits).integers(-2**(bits - 1), 2**(bits - 1) - 1, count, dtype=np.int64,
                                             endpoint=True)
    for name in mpc.context.COMPARISONS:
        ctx = mpc.Context(mpc.MPCConfig(comparison=name), seed=b"bench-msb")
        xs = ctx.share_ring(x.astype(np.uint64))
        f = mpc.secure_jit(lambda c, v, *, n: NL.msb_bits(c, v, n))
        seconds = median_seconds(lambda: f(ctx, xs, n=bits), repeats)
        mark = ctx.ledger.snapshot()
        out = f(ctx, xs, n=bits)
        one = ctx.ledger.since(mark)
        on, dealt = one.totals("online"), one.totals("dealer")
        got = np.asarray(ctx.channel.open("check", out, bits=1))
        if not np.array_equal(got, (x < 0).astype(np.uint64)):
            raise AssertionError(f"{name} msb at n = {bits} disagrees with the plaintext sign")
        row = {"bits": bits, "count": count, "protocol": name, "rounds": on.rounds,
               "online_bytes_per_party": on.bytes_per_party, "dealer_bytes_per_party": dealt.bytes_per_party,
               "compute_s": seconds, "keygen_s": None, "party_eval_s": None}
        if name == "dcf":
            row["keygen_s"], row["party_eval_s"] = _split_seconds(bits, count, repeats)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--count", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [r for bits in args.bits for r in bench(bits, args.count, args.repeats)]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"msb on N = {args.count} elements, median of {args.repeats}, {jax.devices()[0].platform}; "
          f"compute = the simulation (both parties, and the DCF's dealer keygen in-graph)")
    print(f"{'n':>3} {'protocol':<12} {'rounds':>6} {'online B/party':>15} {'dealer B/party':>15} "
          f"{'compute s':>10} {'keygen s':>9} {'1-party eval s':>15}")
    for r in rows:
        opt = (f"{r['keygen_s']:>9.3f} {r['party_eval_s']:>15.3f}" if r["keygen_s"] is not None
               else f"{'—':>9} {'—':>15}")
        print(f"{r['bits']:>3} {r['protocol']:<12} {r['rounds']:>6} {r['online_bytes_per_party']:>15,} "
              f"{r['dealer_bytes_per_party']:>15,} {r['compute_s']:>10.3f} {opt}")


if __name__ == "__main__":
    main()
