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
   accepted drafts = the first rejection index. Only n is opened; the flags after the
   first rejection are never revealed. n is opened to both parties: the server learns it
   anyway one step later, from the length the shared KV cache is rolled back to.
4. The next token comes from row n: norm(max(0, p_n − q_n)) after a rejection, p_γ (the
   bonus) when all γ drafts pass — with q_γ = 0 both are one formula, so the program has
   no secret-dependent (or n-dependent) branch. `speculative_verify` does steps 1–4 in
   one function, for the two privacy modes; `greedy_verify` is the temperature-0 case.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import math

from mpc.channel import BOTH
from mpc.context import Context
from mpc.protocols import compare as C, linear as L
from mpc.protocols.nonlinear import reciprocal
from mpc.protocols.oblivious import select_client_index
from mpc.protocols.sampling import argmax, sample_index, vocab_weights
from mpc.shares import CLIENT, Shared, XorShared, concatenate

ONE = np.uint64(1)
A_FRAC = 28  # most fractional bits of the client's threshold a = r·q(x) (fewer when a·Z needs room)
PRIVACY_MODES = ("paper", "strict")
MAX_GAMMA = 64  # the accept flags of a step are packed into one uint64 word


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
    # a ∈ [0, 1) with as many fractional bits as a·Z (Z ≤ V at scale f) leaves room for below
    # 2^62: tiny acceptance thresholds keep their precision.
    log_v = math.ceil(math.log2(max(V, 2)))
    a_frac = min(A_FRAC, 62 - totals.frac - log_v)
    a_sh = ctx.share(jnp.asarray(a, jnp.float64), owner=CLIENT, frac=a_frac)
    d = L.mul(ctx, a_sh, totals, op=op + "/aZ") - e_x.mul_public(np.uint64(1 << a_frac), frac=e_x.frac + a_frac)
    bits = min(64, a_frac + totals.frac + log_v + 2)
    return C.msb(ctx, d, op=op + "/msb", bits=bits)


def first_rejection(ctx: Context, accept: XorShared, to=CLIENT, op: str = "first_rejection") -> jnp.ndarray:
    """n = number of leading accepted drafts, opened to `to` (the client, or BOTH).

    Cost: ⌈log2 γ⌉ AND rounds (γ-bit words) + 1 round b2a (γ bits) + 1 round to open n
    (8 bytes per sender).
    """
    (gamma,) = accept.shape
    if not 1 <= gamma <= MAX_GAMMA:
        raise ValueError(f"first_rejection: the accept flags pack into one 64-bit word, γ must be in [1, {MAX_GAMMA}], "
                         f"got {gamma}")
    packed = accept.map(lambda v: jnp.bitwise_xor.reduce(v << jnp.arange(gamma, dtype=jnp.uint64)[None], axis=1))
    run = C.prefix_and(ctx, packed, gamma, op=op + "/prefix_and")  # one word
    bits = run.map(lambda v: (v[:, None] >> jnp.arange(gamma, dtype=jnp.uint64)[None]) & ONE)  # (γ,)
    n = C.b2a(ctx, bits, op=op + "/b2a").sum()
    return ctx.channel.open(op + "/open", n, to=to)


def speculative_verify(ctx: Context, logits: Shared, drafts, thresholds, q_rows,
                       temperature: float = 1.0, privacy: str = "strict", op: str = "verify"):
    """POST's private rejection of γ drafts and the next token (steps 1–4 above).

    Args:
      logits: (γ+1, V) shared logits of the private model at the last accepted token and
        the γ drafts.
      drafts: (γ,) the client's drafts x_i (client-held).
      thresholds: (γ,) the client's a_i = r_i·q_i(x_i), r_i ~ U[0, 1) (client-held).
      q_rows: (γ+1, V) the client's draft distributions with a zero row appended (q_γ = 0:
        the bonus row); only row n is used (strict mode), the client's input.
      privacy: "paper" — row n of p = softmax(logits/T) is opened to the client, which
        samples norm(max(0, p_n − q_n)) itself (the POST paper's interface); "strict" —
        the token is drawn inside MPC and only its id is opened to the client.
    Returns:
      (n, out): n ∈ [0, γ] accepted drafts (known to both); out = p_n (V,) reals for
      "paper", the next token id for "strict" (both opened to the client only).

    Steps and cost (rounds; bytes per party at γ+1 rows of V entries):
      1. e ∝ exp(l/T) by `vocab_weights` (T ≠ 1: 1 round; coarse tree max over groups of
         8: 6 levels × 10 rounds at V ≈ 50k; exp 15 rounds), Z = Σ_v e (local).
      2. accept flags (`accept_flags`: oblivious selection 1 round with 8·γ·V bytes from
         the server, a·Z 1 round, one msb per draft ≤ 7 rounds), n by `first_rejection`
         opened to both (⌈log2 γ⌉ + 2 rounds).
      3a. paper: p_n = e_n · (1/Z_n) (reciprocal 12 rounds, product and truncation 2),
          opened to the client (8·V bytes from the server, 1 round).
      3b. strict: w = max(0, e_n − q_n·Z_n) ∝ p_n − q_n (product 1 round + truncation
          1 + relu 7 at 40 bits), then `sample_index` (11 rounds, ~192·V bytes) and the id
          opened to the client (1 round).
    Error: e has `exp_frac` bits (2e-5 absolute on p·Z): p_i(x_i) is compared with an error
    below 2e-5/Z_i, q_n enters with `exp_frac` bits. If max(0, p_n − q_n) has no mass (p_n =
    q_n, which makes a rejection at n impossible in exact arithmetic) strict mode returns
    V − 1.
    """
    if privacy not in PRIVACY_MODES:
        raise ValueError(f"speculative_verify: privacy must be one of {PRIVACY_MODES}, got {privacy!r}")
    if temperature <= 0:
        raise ValueError(f"speculative_verify: temperature must be > 0 (greedy: greedy_verify), got {temperature}")
    nl = ctx.config.nonlinear
    rows, V = logits.shape
    gamma = rows - 1
    e = vocab_weights(ctx, logits, temperature, op=op)  # (γ+1, V) ∝ p, at exp_frac
    Z = e.sum(axis=-1)
    flags = accept_flags(ctx, e[:gamma], Z[:gamma], drafts, thresholds, op=f"{op}/accept")
    n = first_rejection(ctx, flags, to=BOTH, op=f"{op}/first_rejection")
    n_idx = jnp.asarray(n, jnp.int32)
    e_n, z_n = e[n_idx], Z[n_idx].reshape(1)
    if privacy == "paper":
        r = reciprocal(ctx, z_n, lo=1.0, hi=1.04 * V, op=f"{op}/reciprocal")
        p = L.mul(ctx, e_n, r, op=f"{op}/normalise")
        p = L.truncate(ctx, p, p.frac - nl.exp_frac, op=f"{op}/normalise/trunc")
        return n, ctx.reveal(p, to=CLIENT, op=f"{op}/open_row")
    q_n = ctx.share(jnp.asarray(q_rows, jnp.float64)[n_idx], owner=CLIENT, frac=nl.exp_frac)
    qz = L.mul(ctx, q_n, z_n, op=f"{op}/qZ")  # scale 2·exp_frac
    e_up = e_n.mul_public(np.uint64(1 << nl.exp_frac), frac=2 * nl.exp_frac)
    w = L.truncate(ctx, e_up - qz, nl.exp_frac, op=f"{op}/residual/trunc")
    # Truncate, then clip: entries with p ≤ q stay exactly 0. |w| ≤ Z < 2^(log V + 1).
    w = C.relu(ctx, w, op=f"{op}/residual", bits=min(64, nl.exp_frac + math.ceil(math.log2(V)) + 3))
    token = sample_index(ctx, w[None], op=f"{op}/sample")[0]
    return n, ctx.channel.open(f"{op}/open_token", token, to=CLIENT).astype(jnp.int64)


def greedy_verify(ctx: Context, logits: Shared, drafts, op: str = "verify"):
    """Temperature 0: draft x_i is accepted iff it equals the private argmax of row i; the
    next token is the argmax of row n (the correction, or the bonus when all pass).

    1. a_i = argmax of each of the γ+1 rows (`argmax`: 48 rounds at V ≈ 50k), shared.
    2. d_i = a_i − x_i (the client adds −x_i to its share; local). d_i ≠ 0 iff exactly
       one of d_i, −d_i is negative (|d_i| < V), so [d_i ≠ 0] = msb(d_i) ⊕ msb(−d_i): one
       batch of 2γ comparisons at ⌈log2 V⌉ + 2 bits (≤ 6 rounds), no AND.
    3. n by `first_rejection` opened to both (⌈log2 γ⌉ + 2 rounds); a_n opened to the
       client (8 bytes from the server, 1 round).
    Returns (n, token). Ties: the lowest index among entries whose fixed-point encodings
    are equal (`argmax`'s rule).
    """
    rows, V = logits.shape
    gamma = rows - 1
    best = argmax(ctx, logits, op=f"{op}/argmax")  # (γ+1,) frac 0
    d = best[:gamma].add_public((-jnp.asarray(drafts, jnp.int64)).astype(jnp.uint64), party=CLIENT)
    bits = max(8, math.ceil(math.log2(max(V, 2))) + 2)
    signs = C.msb(ctx, concatenate([d, -d]), op=f"{op}/differs", bits=bits)
    differs = signs[:gamma] ^ signs[gamma:]
    n = first_rejection(ctx, C.not_bit(differs), to=BOTH, op=f"{op}/first_rejection")
    token = ctx.channel.open(f"{op}/open_token", best[jnp.asarray(n, jnp.int32)], to=CLIENT)
    return n, token.astype(jnp.int64)
