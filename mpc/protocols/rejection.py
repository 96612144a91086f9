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

Token trees (`tree_verify`): the same test at every node of a drafted tree, with the
recursive rejection over siblings (SpecInfer; `pspec_jax.decode.tree` has the rule and
its proof). The tree's shape is public (a function of the node budget, and the drafted
node count), its tokens and the client's laws are not. Siblings' residuals are computed
for every node at once (the tests at a node do not depend on how the walk got there);
the accepted path is an AND over public sets of accept bits, and only the path is opened.
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
from mpc.shares import CLIENT, Shared, XorShared, concatenate, concatenate_xor, stack, where_public

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


def open_row(ctx: Context, e: Shared, z: Shared, op: str) -> jnp.ndarray:
    """p = e / z (one row of weights e (V,) at exp_frac, their sum z (1,)) opened to the
    client: privacy "paper"'s interface. Cost: reciprocal (12 rounds), product and
    truncation (2), open (8·V bytes from the server, 1 round)."""
    f = ctx.config.nonlinear.exp_frac
    r = reciprocal(ctx, z, lo=1.0, hi=1.04 * e.shape[-1], op=f"{op}/reciprocal")
    p = L.mul(ctx, e, r, op=f"{op}/normalise")
    p = L.truncate(ctx, p, p.frac - f, op=f"{op}/normalise/trunc")
    return ctx.reveal(p, to=CLIENT, op=f"{op}/open_row")


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
        return n, open_row(ctx, e_n, z_n, op)
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


# ----------------------------------------------------------------------- token trees
def tree_index(parents: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The public structure `tree_verify` needs of a tree given by `parents` (the parent
    of slots 1..M−1; slot 0 is the root, a parent's index is below its child's):
    rank (M,) the slot's 1-based position among its siblings (0 for the root), prev (M,)
    its previous sibling (−1 for a first child), and literals (M−1, L): for slot i, the
    accept bits (indices 0..M−2) of i and of its ancestors, and the rejections (indices
    M−1..2M−3) of their earlier siblings — i is on the accepted path iff all of these
    hold; index 2M−2 (a constant 1) pads the rows to one width L."""
    M = len(parents) + 1
    parent = np.asarray((-1,) + tuple(parents), np.int64)
    if any(not 0 <= parent[i] < i for i in range(1, M)):
        raise ValueError(f"tree_index: every parent must precede its child, got {parents}")
    rank, prev, last = np.zeros(M, np.int64), np.full(M, -1, np.int64), {}
    for i in range(1, M):
        prev[i] = last.get(parent[i], -1)
        rank[i] = 1 if prev[i] < 0 else rank[prev[i]] + 1
        last[parent[i]] = i
    rows = []
    for i in range(1, M):
        lits, a = [], i
        while a > 0:
            lits.append(a - 1)
            s = prev[a]
            while s > 0:
                lits.append(M - 1 + s - 1)
                s = prev[s]
            a = parent[a]
        rows.append(lits)
    width = max(len(r) for r in rows)
    literals = np.full((M - 1, width), 2 * M - 2, np.int64)
    for i, r in enumerate(rows):
        literals[i, :len(r)] = r
    return {"parent": parent, "rank": rank, "prev": prev, "literals": literals}


def _and_rows(ctx: Context, x: XorShared, one: XorShared, op: str) -> XorShared:
    """AND along the last axis of bits (R, L): ⌈log2 L⌉ rounds, 1 byte per AND per party."""
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = concatenate_xor([x, one.broadcast_to((x.shape[0], 1))], axis=1)
        half = x.shape[-1] // 2
        (x,) = C.and_many(ctx, [(x[:, :half], x[:, half:])], bits=1, op=op)
    return x[:, 0]


def _residual_rows(ctx: Context, w: Shared, s: Shared, q, op: str) -> Shared:
    """Unnormalised norm(max(r − q, 0)) for r = w / s (rows of w (R, V), totals s (R,)
    at scale exp_frac; q (R, V) the client's laws): max(w − q·s, 0). Cost: a product
    (16·R·V bytes, 1 round), a truncation (1 round) and a ReLU (≤ 8 rounds)."""
    f = ctx.config.nonlinear.exp_frac
    V = w.shape[-1]
    q_sh = ctx.share(jnp.asarray(q, jnp.float64), owner=CLIENT, frac=f)
    qs = L.mul(ctx, q_sh, s[:, None], op=op + "/qZ")  # scale 2f
    w_up = w.mul_public(np.uint64(1 << f), frac=2 * f)
    r = L.truncate(ctx, w_up - qs, f, op=op + "/trunc")
    # Truncate, then clip: entries with r ≤ q stay exactly 0. |r| ≤ s < 2^(log V + 1).
    return C.relu(ctx, r, op=op, bits=min(64, f + math.ceil(math.log2(max(V, 2))) + 3))


def tree_verify(ctx: Context, logits: Shared, n_nodes, tokens, thresholds, q_try, *, parents: tuple[int, ...],
                temperature: float = 1.0, privacy: str = "strict", op: str = "verify_tree"):
    """The private recursive rejection walk over a token tree, and the next token.

    Args:
      logits: (M, V) shared logits of the private model at the tree's M slots (slot 0 the
        root, the last accepted token), from one pass with the tree mask.
      n_nodes: public int scalar: slots 1..n_nodes hold drafted nodes, the rest is padding
        (an adaptive tree uses a prefix of the shape; the server learns the count).
      tokens: (M,) the client's node tokens c_i (slot 0 unused).
      thresholds: (M,) the client's a_i = u_i·q_i(c_i), u_i ~ U[0, 1) (slot 0 unused).
      q_try: (M, V) the client's laws: row i is the law slot i was drawn from given its
        earlier siblings (q without them, renormalised, or δ_{c_i} for a "top" tree).
      parents: public (a static argument): the parents of slots 1..M−1 (`tree_index`).
      temperature: 0 = greedy (a node is accepted iff it is its parent's private argmax).
      privacy: "strict" (the token drawn inside MPC, its id opened to the client) or
        "paper" (p at the last accepted node opened to the client, which applies the
        residuals of that node's rejected children and samples itself).
    Returns:
      (on_path (M−1,) 0/1 opened to both: slot i+1 is on the accepted path, which is a
       chain from the root — n = Σ on_path; out: the next token id (strict, greedy) or
       p at the path's last node (paper, (V,) reals), opened to the client only).

    Steps (sampled; greedy replaces 1–3 by the argmax test of `greedy_verify`):
      1. e = exp-weights of every slot (`vocab_weights`), S = Σ e.
      2. Sibling residuals, all nodes at once: a first child is tested against w = e of
         its parent; the k-th child against w_k = max(w_{k−1} − q_{k−1}·S_{k−1}, 0) of the
         previous sibling (`_residual_rows`), one level per sibling rank.
      3. accept_i = [a_i·S_i < w_i(c_i)] (`accept_flags`), padding slots forced to 0.
      4. on_path(i) = AND of accept over i and its ancestors and of NOT accept over their
         earlier siblings (public literal sets, `tree_index`); opened to both (1 round).
      5. The next token at the path's last node v: the residual after v's last drafted
         child (or e_v at a leaf) sampled inside MPC (strict), or p_v opened (paper).
    Rounds (Kogge–Stone comparisons, V ≈ 50k): weights ≈ 80; (K−1)·10 for K sibling
    ranks; accept 9; path ⌈log2 L⌉ + 1; strict: residual 10, sample 11, open 1 (paper:
    reciprocal 12, product 2, open 1). Bytes: dominated by the selection (8·(M−1)·V from
    the server), the residual levels (≈ 40·V per node with siblings after it) and the
    weights (as `speculative_verify` over M rows).
    """
    if privacy not in PRIVACY_MODES:
        raise ValueError(f"tree_verify: privacy must be one of {PRIVACY_MODES}, got {privacy!r}")
    M, V = logits.shape
    if len(parents) != M - 1:
        raise ValueError(f"tree_verify: {M} logit rows but a shape of {len(parents)} nodes")
    t = tree_index(tuple(parents))
    parent, rank, prev = t["parent"], t["rank"], t["prev"]
    slots = np.arange(1, M)
    valid = (jnp.arange(1, M) <= jnp.asarray(n_nodes, jnp.int32)).astype(jnp.uint64)  # (M−1,) public
    tokens = jnp.asarray(tokens, jnp.int32)
    if temperature == 0.0:
        best = argmax(ctx, logits, op=f"{op}/argmax")  # (M,)
        d = best[parent[1:]].add_public((-tokens[1:].astype(jnp.int64)).astype(jnp.uint64), party=CLIENT)
        bits = max(8, math.ceil(math.log2(max(V, 2))) + 2)
        signs = C.msb(ctx, concatenate([d, -d]), op=f"{op}/differs", bits=bits)
        accept = C.not_bit(signs[:M - 1] ^ signs[M - 1:])
    else:
        e = vocab_weights(ctx, logits, temperature, op=op)  # (M, V) ∝ p at exp_frac
        Z = e.sum(axis=-1)
        w_rows, s_rows = {}, {}  # slot -> the residual its test runs against, and its total
        for i in slots[rank[slots] == 1]:
            w_rows[i], s_rows[i] = e[int(parent[i])], Z[int(parent[i])]
        for k in range(2, int(rank.max()) + 1):
            level = slots[rank[slots] == k]
            before = [int(prev[i]) for i in level]
            w = _residual_rows(ctx, stack([w_rows[b] for b in before]), stack([s_rows[b] for b in before]),
                               jnp.asarray(q_try)[np.asarray(before)], op=f"{op}/siblings{k}")
            for j, i in enumerate(level):
                w_rows[i], s_rows[i] = w[j], w[j].sum()
        W, S = stack([w_rows[i] for i in slots]), stack([s_rows[i] for i in slots])
        accept = accept_flags(ctx, W, S, tokens[1:], jnp.asarray(thresholds)[1:], op=f"{op}/accept")
    accept = accept.and_public(valid)
    one = accept[:1].and_public(np.uint64(0)).xor_public(ONE)  # a constant 1 (local)
    literals = concatenate_xor([accept, C.not_bit(accept), one])
    on_path = _and_rows(ctx, literals[t["literals"]], one, op=f"{op}/path")
    on_path = ctx.channel.open(f"{op}/open_path", on_path, bits=1) & ONE  # (M−1,) to both
    last = jnp.max(jnp.where(on_path == 1, jnp.arange(1, M), 0))  # the path's last node (0: the root)
    if temperature == 0.0:
        return on_path, ctx.channel.open(f"{op}/open_token", best[last], to=CLIENT).astype(jnp.int64)
    e_v, z_v = e[last], Z[last].reshape(1)
    if privacy == "paper":
        return on_path, open_row(ctx, e_v, z_v, op)
    # The residual after the last node's last drafted child (public: the path is open).
    kids = jnp.asarray((parent[1:] == np.arange(M)[:, None]), jnp.int32)  # (M, M−1) public
    last_child = jnp.max(jnp.where((kids[last] == 1) & (valid == 1), jnp.arange(1, M), 0))
    at = jnp.maximum(last_child - 1, 0)
    w_after = _residual_rows(ctx, W[at][None], S[at].reshape(1), jnp.asarray(q_try)[last_child][None],
                             op=f"{op}/residual")[0]
    w = where_public(last_child > 0, w_after, e_v)
    token = sample_index(ctx, w[None], op=f"{op}/sample")[0]
    return on_path, ctx.channel.open(f"{op}/open_token", token, to=CLIENT).astype(jnp.int64)
