"""Comparisons by function secret sharing: one round each.

The dealer gives each party a key of a distributed comparison function (DCF) for a
random mask r (`Dealer.msb_keys`, `mpc.dcf`); the parties open x̂ = x + r mod 2^n, which
is uniform and shows nothing, and each evaluates its key at x̂ locally (Boyle, Chandran,
Gilboa, Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing for Mixed-Mode and
Fixed-Point Secure Computation", Eurocrypt 2021; SIGMA's DReLU). Selected for every
comparison by `MPCConfig.comparison = "dcf"` (`mpc.protocols.compare.msb` dispatches
here); the Kogge–Stone circuit stays the default (no keys, less dealer data).

Output form: the DCF's output group is Z_2 (ℓ = 1), whose additive shares *are* XOR
shares of the bit, so `msb_dcf` returns the same `XorShared` bit-0 word as the
Kogge–Stone `msb` and every caller (`select_bit`, `b2a`, the XOR algebra of interval
bits in `mpc.protocols.nonlinear`) works unchanged; ℓ = 1 is also the smallest key.
Callers that want the bit in Z_{2^64} without b2a's round use `msb_dcf_begin(arithmetic=
True)`: keys with outputs in Z_{2^64} (ℓ = 64, larger keys, a 3-level leaf table).

Costs per party for N elements of n examined bits:
  msb_dcf: 1 round, ⌈n·N/8⌉ online bytes (x̂ mod 2^n); dealer bytes 8·N·W to each
           party, W = `mpc.dcf.correction_words(n − 1, 1)` = 2m + ⌈(3m + 2^ν)/64⌉ for
           ν = min(n − 1, 9) leaf levels and m = n − 1 − ν tree levels (at most 2
           words per element at n ≤ 8, 21 at n = 16, 54 at n = 32, 119 at n = 64); compute
           m + 1 ChaCha20 blocks per element per party (plus 2(m + 1) for the dealer's
           key generation: offline with `mpc.Context(split=True)`, in-graph otherwise).
"""

from __future__ import annotations

import math

from mpc import dcf
from mpc.channel import Rider
from mpc.context import Context
from mpc.shares import Shared, XorShared, local, local_xor


def msb_dcf(ctx: Context, x: Shared, bits: int, op: str = "msb") -> XorShared:
    """The sign bit of the low `bits` bits of x (two's complement), XOR-shared in bit 0.

    1. Dealer: r uniform mod 2^n shared additively, and each party's DCF key for the
       carry of x + r (`Dealer.msb_keys`; msb(r) is folded into the key).
    2. Open x̂ = x + r mod 2^n: each party sends its share's low n bits (1 round).
    3. Each party evaluates its key at x̂ (`mpc.dcf.msb_from_opened`, ℓ = 1): local.
    Rounds: 1. Online bytes per party: ⌈n·N/8⌉. Dealer bytes per party: 8·N·W (module
    docstring). Error: none when |x| < 2^(n−1) ring units (x read as an n-bit value);
    outside that, the sign of x mod 2^n — as the Kogge–Stone `msb` at the same n.
    """
    rider = msb_dcf_begin(ctx, x, bits)
    rider.land(ctx.channel.open(op + "/open", rider.payload))
    return rider.result


def msb_dcf_begin(ctx: Context, x: Shared, bits: int, arithmetic: bool = False) -> Rider:
    """`msb_dcf` as a `Rider`: the opening of x̂ (n bits wide) can travel in another
    protocol's message. `arithmetic`: keys with outputs in Z_{2^64} (ℓ = 64, a larger
    key), so that the result is the bit as arithmetic shares (frac 0) and no b2a round
    follows."""
    if not 2 <= bits <= 64:
        raise ValueError(f"msb_dcf: bits must be in [2, 64], got {bits}")
    out_bits = 64 if arithmetic else 1
    r, keys = ctx.dealer.msb_keys(x.shape, bits, out_bits=out_bits)

    def finish(opened):
        flat = opened[0].reshape(-1)
        bit = lambda p: dcf.msb_from_opened(p, keys[p], flat, n_bits=bits,
                                                 out_bits=out_bits).reshape(x.shape)  # noqa: E731
        return local(ctx.parties, bit) if arithmetic else local_xor(ctx.parties, bit)

    return Rider([(x.with_frac(0) + r, bits)], finish)  # x̂ uniform mod 2^n


def msb_dcf_cost(elements: int, bits: int, out_bits: int = 1) -> dict:
    """`msb_dcf`'s declared costs per party for `elements` elements at `bits` bits: rounds,
    online bytes, dealer bytes (what the ledger records; tests compare the two); out_bits
    64 for `msb_dcf_begin(arithmetic=True)`."""
    return {"rounds": 1, "online_bytes": math.ceil(bits * elements / 8),
            "dealer_bytes": 8 * elements * dcf.correction_words(bits - 1, out_bits)}
