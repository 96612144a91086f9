"""Comparison family: AND, MSB, less-than, ReLU, select, bit conversion.

MSB follows the A2B-with-carry-tree design of SPU and CrypTen: each party's share, as a
bit string, is one addend of x = x_0 + x_1; the sign bit of the sum is
p_63 ⊕ carry_63, and the carry into bit 63 is a parallel-prefix (Kogge–Stone) over
generate/propagate bits, computed with dealer AND triples on whole 64-bit words, every
level of every element of a call batched into one exchange. The words are lane-packed:
an ℓ-bit comparison puts k = ⌊64/ℓ⌋ elements in one word (shifts clear what crosses
into the next lane), so a 16-bit comparison ANDs a quarter of the words — the local
work and the dealer's triples shrink k-fold, the wire carries the same ℓ bits per element.

Costs per party for n elements, with ℓ = `MPCConfig.compare_bits` (64 by default) or the
caller's, L = ⌈log2(ℓ − 1)⌉ prefix levels (6 for ℓ = 64), m = ⌈n/k⌉ words:
  msb:         1 + L rounds; 4·L·⌈m·k·ℓ/8⌉ bytes (≈ 4·L·ℓ·n/8: 2L ANDs, the generate
               AND, two per level but the last, one at the last; each opens two words of
               k·ℓ bits) — 7 rounds and 192·n bytes at ℓ = 64; dealer 2L AND triples of
               m words (8·m bytes each)
  b2a:         1 round, ⌈n/8⌉ bytes
  select_bit:  1 round, 8·n + ⌈n/8⌉ bytes (B2A fused with the product)
  relu, select, lt: msb + select_bit.
With `MPCConfig.comparison = "dcf"`, msb (and so lt, relu, and every comparison of
`mpc.protocols.nonlinear`) is `mpc.protocols.fss.msb_dcf` instead: 1 round, ⌈ℓ·n/8⌉
bytes, the same XOR-shared output.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mpc.channel import Rider
from mpc.context import Context
from mpc.protocols.fss import msb_dcf
from mpc.ring import DTYPE
from mpc.shares import CLIENT, SERVER, Shared, XorShared, local_xor

_ONE = np.uint64(1)


def _low_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)


def and_many(ctx: Context, pairs: list[tuple[XorShared, XorShared]], bits: int = 64,
             op: str = "and") -> list[XorShared]:
    """Bitwise ANDs of XOR-shared words, all in one round (Beaver on GF(2)^64).

    For each pair: dealer triple (a, b, c = a & b); open e = x ⊕ a, f = y ⊕ b;
    z = c ⊕ (e & b) ⊕ (f & a) ⊕ (e & f) (party 0 adds the last term).
    Cost: 2·⌈bits/8⌉ bytes per word per pair per party, 1 round.
    """
    triples = [ctx.dealer.and_triple(x.shape) for x, _ in pairs]
    opened = ctx.channel.open(op, [t for (x, y), (a, b, _) in zip(pairs, triples)
                                   for t in (x ^ a, y ^ b)], bits=bits)
    out = []
    for i, (a, b, c) in enumerate(triples):
        e, f = opened[2 * i], opened[2 * i + 1]
        out.append((c ^ b.and_public(e) ^ a.and_public(f)).xor_public(e & f))
    return out


def msb(ctx: Context, x: Shared, op: str = "msb", bits: int | None = None) -> XorShared:
    """The sign bit of x, XOR-shared in bit 0 of each word. See the module docstring.

    `bits` (default `MPCConfig.compare_bits`): examine only the low ℓ bits, exact while
    |x| < 2^(ℓ−1) ring units — callers that know their range pass a smaller ℓ.
    `MPCConfig.comparison` picks the protocol: the Kogge–Stone circuit below, or a DCF
    (`mpc.protocols.fss.msb_dcf`, one round).
    """
    bits = ctx.config.compare_bits if bits is None else bits
    if not 8 <= bits <= 64:
        raise ValueError(f"msb: bits must be in [8, 64], got {bits}")
    if ctx.config.comparison == "dcf":
        return msb_dcf(ctx, x, bits, op=op)
    # ℓ-bit lanes, ⌊64/ℓ⌋ per word: the circuit runs on fewer words (every AND, its
    # dealer triple and the local work), the wire carries the same ℓ bits per element.
    lanes = 64 // bits
    n = x.size
    words = -(-n // lanes)
    offsets = np.arange(lanes, dtype=np.uint64) * np.uint64(bits)
    wire_bits = lanes * bits

    def pack(v):  # (parties, *shape) -> (parties, words): element i in lane i mod lanes
        v = (v & _low_mask(bits)).reshape(v.shape[0], -1)
        v = jnp.pad(v, ((0, 0), (0, words * lanes - n))).reshape(v.shape[0], words, lanes)
        return (v << offsets).sum(axis=-1)  # disjoint fields: the sum is their OR

    def shifted(w: XorShared, s: int) -> XorShared:
        # w << s within each lane: bits that cross into the next lane are cleared
        return (w << s).and_public(_lanes(_low_mask(bits) ^ _low_mask(s), lanes, bits))

    # Each party's share, as a bit string, is one addend: party q's word x_q held as a XOR
    # sharing (x_q, 0). Generate bits g = x_0 & x_1 (an AND of two privately held words);
    # propagate p = x_0 ⊕ x_1 (local: each party's share of p is its own word).
    own = x.map(pack, frac=0)
    zeros = jnp.zeros((words,), DTYPE)

    def addend(q: int) -> XorShared:
        return local_xor(ctx.parties, lambda party: own.share(party) if party == q else zeros)

    p = local_xor(ctx.parties, own.share)
    (g,) = and_many(ctx, [(addend(CLIENT), addend(SERVER))], bits=wire_bits, op=f"{op}/and")
    p_top = p >> (bits - 1)
    levels = math.ceil(math.log2(bits - 1))
    for level in range(levels):
        s = 1 << level
        if level < levels - 1:
            gp, pp = and_many(ctx, [(p, shifted(g, s)), (p, shifted(p, s))], bits=wire_bits, op=f"{op}/and")
            g, p = g ^ gp, pp
        else:
            (gp,) = and_many(ctx, [(p, shifted(g, s))], bits=wire_bits, op=f"{op}/and")
            g = g ^ gp
    # g now holds, in bit i of a lane, the carry out of its bits [0, i]; the carry into the
    # top bit is bit ℓ−2. Each lane's sign bit lands in the lane's bit 0, then in bit 0 of
    # its element's word.
    top = p_top ^ (g >> (bits - 2))
    return top.map(lambda v: ((v[..., None] >> offsets) & _ONE).reshape(v.shape[0], -1)[:, :n]
                   .reshape(v.shape[0], *x.shape))


def _lanes(word: np.uint64, lanes: int, bits: int) -> np.uint64:
    """`word` (< 2^bits) repeated in each of `lanes` lanes of `bits` bits."""
    return np.uint64(sum(int(word) << (k * bits) for k in range(lanes)))


def b2a(ctx: Context, b: XorShared, op: str = "b2a") -> Shared:
    """A XOR-shared bit (bit 0) as arithmetic shares (frac 0).

    Dealer: random bit r with XOR and arithmetic shares. Open c = b ⊕ r; then
    b = c + r − 2·c·r = c + (1 − 2c)·[r]. Cost: ⌈n/8⌉ bytes per party, 1 round.
    """
    r_xor, r = ctx.dealer.bit_pair(b.shape)
    c = ctx.channel.open(op, b ^ r_xor, bits=1)
    return r.mul_public(_ONE - (c << _ONE)).add_public(c)


def select_bit(ctx: Context, b: XorShared, x: Shared, op: str = "select") -> Shared:
    """b · x for a XOR-shared bit b and an arithmetic x, in one round (B2A fused with the
    product).

    Dealer: random bit r (XOR and arithmetic shares), random a, and [r·a]. Open
    c = b ⊕ r (1 bit) and d = x − a together; with b = c + (1 − 2c)·r:
        b·x = c·d + c·[a] + (1 − 2c)·(d·[r] + [r·a]).
    Cost: 8·n + ⌈n/8⌉ bytes per party, 1 round. Exact.
    """
    rider = select_bit_begin(ctx, b, x)
    rider.land(ctx.channel.open(op, rider.payload))
    return rider.result


def select_bit_begin(ctx: Context, b: XorShared, x: Shared) -> Rider:
    """`select_bit` as a `Rider` (its opening can travel in another protocol's message)."""
    r_xor, r, a, ra = ctx.dealer.bit_select_quad(x.shape)

    def finish(opened) -> Shared:
        c, d = opened
        c = c & _ONE
        one_minus_2c = _ONE - (c << _ONE)
        z = a.mul_public(c) + (r.mul_public(d) + ra).mul_public(one_minus_2c)
        return z.add_public(c * d).with_frac(x.frac)

    return Rider([(b ^ r_xor, 1), x - a.with_frac(x.frac)], finish)


def not_bit(b: XorShared) -> XorShared:
    """1 ⊕ b for a bit in bit 0 (local)."""
    return b.xor_public(_ONE)


def relu(ctx: Context, x: Shared, op: str = "relu", bits: int | None = None) -> Shared:
    """max(x, 0) = (1 ⊕ msb(x)) · x. Cost: msb + select_bit."""
    return select_bit(ctx, not_bit(msb(ctx, x, op=op + "/msb", bits=bits)), x, op=op + "/select")


def lt(ctx: Context, x: Shared, y: Shared, op: str = "lt", bits: int | None = None) -> XorShared:
    """[x < y] as a XOR-shared bit = msb(x − y) (valid while |x − y| < 2^(ℓ−1))."""
    return msb(ctx, x - y, op=op, bits=bits)


def prefix_and(ctx: Context, word: XorShared, width: int, op: str = "prefix_and") -> XorShared:
    """Bit i of the result = AND of bits 0..i of `word` (bits ≥ width ignored).

    Kogge–Stone over the bit positions of one word per element: ⌈log2 width⌉ rounds, one
    AND of `width`-bit words per round (2·⌈width/8⌉ bytes per element per party).
    """
    low = _low_mask(width)
    p = word.and_public(low)
    s = 1
    while s < width:
        shifted = (p << s).xor_public(np.uint64((1 << s) - 1))  # missing positions count as 1
        (p,) = and_many(ctx, [(p, shifted)], bits=width, op=op)
        p = p.and_public(low)
        s *= 2
    return p


def select(ctx: Context, b: XorShared, x: Shared, y: Shared, op: str = "select") -> Shared:
    """b ? x : y = y + b·(x − y). Cost: select_bit."""
    return y + select_bit(ctx, b, x - y, op=op)
