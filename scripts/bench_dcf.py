#!/usr/bin/env python
"""Micro-benchmark of the DCF (mpc/dcf.py): keygen (both keys) and one party's eval, time
per element at N elements (median of --repeats runs after a compiling run), and key sizes
per element. Root seeds come from the dealer's AES-CTR streams, outside the timing.

  python scripts/bench_dcf.py [--n-bits 16 32 64] [--count 65536] [--out-bits 64] [--json]
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np

import mpc  # noqa: F401  (enables 64-bit JAX types)
from mpc import dcf
from pspec_jax.benchmarks.mpc import dcf_bench_words, median_seconds


def bench(n_bits: int, count: int, out_bits: int, repeats: int) -> dict:
    roots, words = dcf_bench_words(b"bench-dcf", count, 3)
    mask = np.uint64((1 << n_bits) - 1)
    alpha, beta, x = words[0] & mask, words[1], words[2] & mask
    keygen_s = median_seconds(lambda: dcf.dcf_keygen(roots, alpha, beta, n_bits=n_bits, out_bits=out_bits),
                               repeats)
    key0, key1 = dcf.dcf_keygen(roots, alpha, beta, n_bits=n_bits, out_bits=out_bits)
    eval_s = median_seconds(lambda: dcf.dcf_eval(0, key0, x, n_bits=n_bits, out_bits=out_bits), repeats)
    total = (np.asarray(dcf.dcf_eval(0, key0, x, n_bits=n_bits, out_bits=out_bits))
             + np.asarray(dcf.dcf_eval(1, key1, x, n_bits=n_bits, out_bits=out_bits))) & np.uint64((1 << out_bits) - 1)
    if not np.array_equal(total, np.where(x < alpha, beta & np.uint64((1 << out_bits) - 1), 0)):
        raise AssertionError(f"DCF shares do not reconstruct at n = {n_bits}")
    return {"n_bits": n_bits, "out_bits": out_bits, "count": count, "repeats": repeats,
            "keygen_us_per_element": 1e6 * keygen_s / count, "eval_us_per_element": 1e6 * eval_s / count,
            "eval_ns_per_prg_block": 1e9 * eval_s / (count * (n_bits - dcf.leaf_levels(n_bits, out_bits) + 1)),
            "key_bytes_per_element": dcf.key_bytes(n_bits, out_bits),
            "correction_bytes_per_element": dcf.correction_bits(n_bits, out_bits) / 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--count", type=int, default=1 << 16)
    parser.add_argument("--out-bits", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [bench(n, args.count, args.out_bits, args.repeats) for n in args.n_bits]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"DCF, N = {args.count} elements, ℓ = {args.out_bits}, median of {args.repeats}, "
          f"{jax.devices()[0].platform}")
    print(f"{'n':>3} {'keygen µs/elem':>15} {'eval µs/elem':>13} {'ns/PRG block':>13} {'key B/elem':>11} "
          f"{'CW B/elem':>10}")
    for r in rows:
        print(f"{r['n_bits']:>3} {r['keygen_us_per_element']:>15.2f} {r['eval_us_per_element']:>13.2f} "
              f"{r['eval_ns_per_prg_block']:>13.0f} {r['key_bytes_per_element']:>11} "
              f"{r['correction_bytes_per_element']:>10.1f}")


if __name__ == "__main__":
    main()
