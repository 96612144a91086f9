"""POST's private draft rejection: the accept test and the first rejection index.

Speculative sampling accepts draft x_i with probability min(1, p_i(x_i)/q_i(x_i)), i.e.
iff r_i·q_i(x_i) < p_i(x_i) for r_i ~ U[0, 1). The client drew x_i from its drafter and
knows q_i(x_i) and r_i, so a_i = r_i·q_i(x_i) is its private input. The private
distribution is never normalised here: with e_i = exp((l_i − m_i)/T) and Z_i = Σ_v e_i(v),
p_i(x_i) = e_i(x_i)/Z_i, and the test is division-free: a_i·Z_i < e_i(x_i).

1. Select, then compare: e_i(x_i) is selected at the client's hidden index (oblivious
   selection, `mpc.protocols.oblivious`: one round, the server re-masks its share).
2. d_i = a_i·Z_i − e_i(x_i)·2^28 at scale 2^(28+f) (one Beaver product, no truncation;
   a_i carries 28 fractional bits so small thresholds keep their precision);
   accept_i = msb(d_i): one comparison per draft, not one per vocabulary entry.
3. The accept bits are packed into one word; a prefix-AND gives the run of leading
   accepts, whose popcount (bits to arithmetic, summed) is n ∈ [0, γ], the number of
   accepted drafts = the first rejection index. Only n is opened, to the client; the
   flags after the first rejection are never revealed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mpc.context import Context
from mpc.protocols import compare as C, linear as L
from mpc.protocols.oblivious import select_client_index
from mpc.shares import CLIENT, Shared, XorShared

ONE = np.uint64(1)
A_FRAC = 28  # fractional bits of the client's threshold a = r·q(x); a·Z·2^(A_FRAC+f) < 2^62 for V < 2^18


def accept_flags(ctx: Context, weights: Shared, totals: Shared, drafts, a, op: str = "accept") -> XorShared:
    """Accept bits (bit 0 of each word) for γ drafts.

    Args:
      weights: (γ, V) shared unnormalised weights e_i (scale f), ≥ 0.
      totals: (γ,) shared Z_i = Σ_v e_i(v) (scale f).
      drafts: (γ,) the client's draft ids (client-held).
      a: (γ,) the client's r_i·q_i(x_i) in [0, 1) (client-held reals).
    Cost: oblivious selection (server 8·γ·V bytes, 1 round) + mul (16·γ) + msb of γ values
    at ℓ = 2f + ⌈log2 V⌉ + 2 bits.
    """
    gamma, V = weights.shape
    e_x = select_client_index(ctx, weights, jnp.asarray(drafts, jnp.int32), op=op + "/select")  # (γ,)
    # a in [0, 1) at A_FRAC fractional bits: tiny acceptance thresholds keep their precision.
    a_sh = ctx.share(np.asarray(a, np.float64), owner=CLIENT, frac=A_FRAC)
    d = L.mul(ctx, a_sh, totals, op=op + "/aZ") - e_x.mul_public(np.uint64(1 << A_FRAC), frac=e_x.frac + A_FRAC)
    bits = min(64, A_FRAC + totals.frac + int(np.ceil(np.log2(V))) + 2)
    return C.msb(ctx, d, op=op + "/msb", bits=bits)


def first_rejection(ctx: Context, accept: XorShared, op: str = "first_rejection") -> jnp.ndarray:
    """n = number of leading accepted drafts, opened to the client only.

    Cost: ⌈log2 γ⌉ AND rounds (γ-bit words) + 1 round b2a (γ bits) + 1 round to open n
    (8 bytes from the server).
    """
    (gamma,) = accept.shape
    packed = XorShared(jnp.bitwise_xor.reduce(accept.v << jnp.arange(gamma, dtype=jnp.uint64)[None], axis=1))
    run = C.prefix_and(ctx, packed, gamma, op=op + "/prefix_and")  # one word
    bits = XorShared((run.v[:, None] >> jnp.arange(gamma, dtype=jnp.uint64)[None]) & ONE)  # (γ,)
    n = C.b2a(ctx, bits, op=op + "/b2a").sum()
    return ctx.channel.open(op + "/open", n, to=CLIENT)
