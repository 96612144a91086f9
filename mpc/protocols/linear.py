"""Linear-algebra protocols: products of shared values, products with server weights,
and truncation.

Conventions: a `Shared` carries its fixed-point scale `frac`. Products return the
untruncated result at scale frac_x + frac_y; `truncate` brings it back. Every function
states its online cost per party (bytes sent, rounds) for n output elements; the ledger
test checks these formulas exactly.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mpc.channel import Rider
from mpc.context import Context, secure_jit
from mpc.dealer import PRODUCTS
from mpc.fixed import FixedPoint
from mpc.ring import DTYPE, msb, ring_matmul, ring_matmul_small, small_operand
from mpc.shares import CLIENT, SERVER, Shared, concatenate, local


# --- elementwise products -------------------------------------------------------------
def mul(ctx: Context, x: Shared, y: Shared, op: str = "mul") -> Shared:
    """x · y elementwise (Beaver), untruncated: scale frac_x + frac_y.

    1. Dealer: triple (a, b, c = a·b) of the broadcast shape.
    2. Open e = x − a and f = y − b to both (one round).
    3. z = c + e·b + f·a + e·f (party 0 adds the public e·f).

    Cost: 16·n bytes per party, 1 round. Exact in the ring.
    """
    shape = jnp.broadcast_shapes(x.shape, y.shape)
    a, b, c = ctx.dealer.triple(shape)
    e, f = ctx.channel.open(op, [x.broadcast_to(shape) - a.with_frac(x.frac),
                                 y.broadcast_to(shape) - b.with_frac(y.frac)])
    z = c + b.mul_public(e) + a.mul_public(f)
    return z.add_public(e * f).with_frac(x.frac + y.frac)


def square(ctx: Context, x: Shared, op: str = "square", riders=()) -> Shared:
    """x² elementwise, untruncated (scale 2·frac): with (a, a²) open e = x − a, then
    x² = a² + 2·e·a + e². Cost: 8·n bytes per party, 1 round. `riders`: other steps
    whose openings travel in the same message (`mpc.channel.Rider`)."""
    a, a2 = ctx.dealer.square_pair(x.shape)
    e = ctx.channel.open(op, x - a.with_frac(x.frac), bits=1, riders=riders)
    z = a2 + a.mul_public(e * np.uint64(2))
    return z.add_public(e * e).with_frac(2 * x.frac)


def mul_fixed(ctx: Context, x: Shared, y: Shared, op: str = "mul") -> Shared:
    """Fixed-point product x·y truncated back to x's scale.
    Cost: 24·n bytes per party, 2 rounds (mul + truncate)."""
    return truncate(ctx, mul(ctx, x, y, op=op), y.frac, op=op + "/trunc")


def mul_const(ctx: Context, x: Shared, c, op: str = "mul_const") -> Shared:
    """x · c for a public real constant (scalar or array), truncated back to x's scale.
    Cost: 8·n bytes per party, 1 round (the truncation)."""
    f = ctx.config.frac_bits
    return truncate(ctx, x.mul_public(FixedPoint(f).encode(c), frac=x.frac + f), f, op=op)


# --- shared x shared matmul -----------------------------------------------------------
def matmul(ctx: Context, x: Shared, y: Shared, op: str = "matmul") -> Shared:
    """x @ y for two shared tensors (attention's QKᵀ and PV), untruncated.

    `jnp.matmul` broadcasting: x (..., m, k), y (..., k, n).
    1. Dealer: matmul triple (A, B, C = A @ B) with the operands' shapes.
    2. Open E = x − A and F = y − B to both (one round).
    3. z = C + E @ B + A @ F + E @ F (party 0 adds E @ F).

    Cost: 8·(|x| + |y|) bytes per party, 1 round.
    """
    a, b, c = ctx.dealer.matmul_triple(x.shape, y.shape)
    e, f = ctx.channel.open(op, [x - a.with_frac(x.frac), y - b.with_frac(y.frac)])
    z = c + b.map(lambda v: ring_matmul(e, v)) + a.map(lambda v: ring_matmul(v, f))
    return z.add_public(ring_matmul(e, f)).with_frac(x.frac + y.frac)


# --- products with a server-held weight -------------------------------------------------
@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class ServerWeight:
    """A weight the server holds in the clear, prepared for fixed-weight products.

    Fields (who holds each; a party process holds only its own, the others are None):
      w: the weight as ring elements (server).
      f: F = W − B, the weight under the dealer's fixed mask B, opened to the client once
         per session (client).
      mask: B (drawn from the server's dealer key: the server and the dealer; the dealer
         correlates each call's triple with it).
      w_small: w as float32/float64 when its entries are small signed integers (the usual
         case for trained weights at f = 16), for the server's fast exact product
         (`ring_matmul_small`); None otherwise (server).
      handle: the request number that drew B, which names B to the dealer (public).
      frac: fixed-point scale of w.
      transposed: this is the transpose of the weight B was drawn for (a tied LM head).
    """

    w: jax.Array | None
    f: jax.Array | None
    mask: jax.Array | None
    w_small: jax.Array | None
    handle: jax.Array
    frac: int
    shape: tuple[int, ...]
    transposed: bool = False

    def tree_flatten(self):
        return (self.w, self.f, self.mask, self.w_small, self.handle), (self.frac, self.shape, self.transposed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def __repr__(self) -> str:  # never print a weight or a mask
        return f"ServerWeight(shape={self.shape}, frac={self.frac}, transposed={self.transposed})"

    @property
    def T(self) -> "ServerWeight":
        """The transposed weight under the transposed mask (e.g. a tied LM head); no set-up."""
        t = lambda a: None if a is None else a.T  # noqa: E731
        return ServerWeight(t(self.w), t(self.f), t(self.mask), t(self.w_small), self.handle, self.frac,
                            self.shape[::-1], not self.transposed)


def setup_weight(ctx: Context, w, frac: int | None = None, op: str = "weight") -> ServerWeight:
    """Session set-up for one server weight: the dealer draws its fixed mask B (from the
    server's stream) and the server opens F = W − B to the client, once.

    Cost (ledger kind "setup"): 8·|W| bytes from the server, 1 round; no dealer bytes.
    """
    frac = ctx.config.frac_bits if frac is None else frac
    shape = tuple(np.shape(w))
    server = SERVER in ctx.parties
    w_ring = small = None
    if server:  # the session-independent part, on the values: range checks, the fast form
        w_ring = FixedPoint(frac).encode(w) if not (hasattr(w, "dtype") and w.dtype == DTYPE) else jnp.asarray(w)
        small = small_operand(w_ring) if len(shape) == 2 else None
    mask, handle, f = _open_weight(ctx, w_ring if server else jnp.zeros(shape, DTYPE), shape=shape, op=op)
    return ServerWeight(w_ring, f if CLIENT in ctx.parties else None, mask, small, handle, frac, shape)


def _open_weight_program(ctx: Context, w_ring, *, shape: tuple[int, ...], op: str):
    """The session's part of `setup_weight`, compiled (once per shape in a context): a
    long-lived party process runs it every session, and run eagerly each host callback
    would compile anew and stay cached (~40 MB per session on a 2-layer model)."""
    mask, handle = ctx.dealer.weight_mask(shape)
    f = ctx.channel.send(op, SERVER, lambda: w_ring - mask, jax.ShapeDtypeStruct(shape, DTYPE), kind="setup")
    return mask, handle, f


_open_weight = secure_jit(_open_weight_program)


def weight_products(ctx: Context, x: Shared, sws: list[ServerWeight], product: str, op: str,
                    impl=None) -> list[Shared]:
    """[x ∘ W_j] for server weights reading the same x (∘ = `product`, "matmul" or "mul"),
    untruncated; `impl`: a bit-identical implementation of the product with bounded
    memory for vocabulary-sized weights (the server's operand is its small-integer float
    form when it has one). Cost: 8·|x| bytes from the client, 1 round; dealer 8·Σ|x ∘ W_j|."""
    fn = impl or PRODUCTS[product]
    # 1. Dealer: the client's mask A (same shape as x) and shares of C_j = A ∘ B_j.
    a, cs = ctx.dealer.weight_triple([sw.mask for sw in sws], [sw.handle for sw in sws], x.shape, product,
                                     mask_shapes=[sw.shape for sw in sws],
                                     transposed=[sw.transposed for sw in sws], impl=impl)
    # 2. The client sends E = x_0 − A to the server once (one one-way round).
    e = ctx.channel.send(op, CLIENT, lambda: x.share(CLIENT) - a, jax.ShapeDtypeStruct(x.shape, DTYPE))

    def party_product(p: int, sw: ServerWeight, c: Shared) -> jax.Array:
        # 3. Client: A ∘ F + c_0 (A, F, c_0 are known before the call: offline work).
        #    Server: (x_1 + E) ∘ W + c_1.     Sum: A∘(F + B − W) + x∘W = x∘W.
        if p == CLIENT:
            return ctx.dealer.derived(lambda a_, f, c0: fn(a_, f) + c0, a, sw.f, c.share(CLIENT))
        if impl is not None:
            return impl(x.share(SERVER) + e, sw.w if sw.w_small is None else sw.w_small) + c.share(SERVER)
        if product == "matmul" and sw.w_small is not None:
            return ring_matmul_small(x.share(SERVER) + e, sw.w_small) + c.share(SERVER)
        return fn(x.share(SERVER) + e, sw.w) + c.share(SERVER)

    return [local(ctx.parties, lambda p: party_product(p, sw, c), x.frac + sw.frac) for sw, c in zip(sws, cs)]


def matmul_weight(ctx: Context, x: Shared, sw: ServerWeight, op: str = "matmul_weight") -> Shared:
    """x @ W for shared x (..., m, k) and a server weight W (k, n), untruncated.

    Fixed-weight Beaver with an asymmetric opening: the server's share never needs
    masking (it multiplies it by its own W), so only the client's share is masked.
    Cost: 8·m·k bytes from the client, 0 from the server, 1 round; dealer sends the
    server 8·m·n bytes of correction. Exact in the ring.
    """
    return matmul_weights(ctx, x, [sw], op)[0]


def matmul_weights(ctx: Context, x: Shared, sws: list[ServerWeight], op: str = "matmul_weight") -> list[Shared]:
    """[x @ W_j] for several server weights reading the same x (q/k/v, gate/up): x is
    masked and sent once. Cost: 8·m·k bytes from the client, 1 round; dealer 8·m·Σn_j."""
    for sw in sws:
        if x.shape[-1] != sw.shape[0]:
            raise ValueError(f"matmul_weight: {x.shape} @ {sw.shape}")
    return weight_products(ctx, x, sws, "matmul", op)


def mul_weight(ctx: Context, x: Shared, sw: ServerWeight, op: str = "mul_weight") -> Shared:
    """x ∘ w elementwise for a server-held tensor w broadcast against x (e.g. a norm's
    scale), untruncated. Same protocol as `matmul_weight`.
    Cost: 8·|x| bytes from the client, 1 round."""
    return weight_products(ctx, x, [sw], "mul", op)[0]


def linear(ctx: Context, x: Shared, sw: ServerWeight, bias: jax.Array | None = None,
           out_frac: int | None = None, op: str = "linear") -> Shared:
    """x @ W + b, truncated to `out_frac` (default x's scale; an input above the
    activations' scale, e.g. a norm's output, is brought down by the same truncation).
    `bias`: the server's ring-encoded bias at the output scale (added by the server
    locally). Cost: matmul_weight + truncate(m·n), 2 rounds."""
    return linear_many(ctx, x, [(sw, bias)], out_frac, op=op)[0]


def linear_many(ctx: Context, x: Shared, layers: list[tuple[ServerWeight, jax.Array | None]],
                out_frac: int | None = None, op: str = "linear") -> list[Shared]:
    """Several linear layers on one input: x masked and sent once, all outputs truncated
    (to `out_frac`, default x's scale) in one exchange. Cost: 8·m·k (client) + 8·m·Σn_j
    (both) bytes, 2 rounds."""
    raws = matmul_weights(ctx, x, [sw for sw, _ in layers], op=op)
    widths = [r.shape[-1] for r in raws]
    fracs = {sw.frac for sw, _ in layers}
    if len(fracs) != 1:
        raise ValueError(f"linear_many: weights at different scales {sorted(fracs)}")
    bits = fracs.pop() + (0 if out_frac is None else x.frac - out_frac)
    y = truncate(ctx, raws[0] if len(raws) == 1 else concatenate(raws, axis=-1), bits, op=op + "/trunc")
    outs, at = [], 0
    for (_, bias), w in zip(layers, widths):
        part = y[..., at:at + w]
        outs.append(part if bias is None else part.add_public(bias, party=SERVER))
        at += w
    return outs


# --- shared operands masked once (the KV cache) -----------------------------------------
@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class MaskedShared:
    """A shared tensor Y kept as Y = F + B: B a dealer mask (shared, fixed), F = Y − B
    opened to both parties once. Products with Y then open only the other operand — the
    fixed-operand Beaver trick applied to a shared value (the KV cache: each row is masked
    when appended and reused by every later step's QKᵀ and PV).
    """

    mask: Shared  # B, shared; the dealer can rebuild it from `rows`
    opened: jax.Array  # F = Y − B, public
    rows: jax.Array  # (*row axes, 2) int64: per row, the request that masked it and its word offset
    perm: tuple[int, ...] | None = None  # axes order relative to the layout `rows` describes

    def tree_flatten(self):
        return (self.mask, self.opened, self.rows), self.perm

    @classmethod
    def tree_unflatten(cls, perm, children):
        return cls(*children, perm)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mask.shape

    @property
    def frac(self) -> int:
        return self.mask.frac

    def value(self) -> Shared:
        """Y itself as an ordinary sharing (F added by party 0)."""
        return self.mask.add_public(self.opened)

    def transpose(self, *axes) -> "MaskedShared":
        base = tuple(range(self.mask.ndim)) if self.perm is None else self.perm
        return MaskedShared(self.mask.transpose(*axes), self.opened.transpose(*axes), self.rows,
                            tuple(base[a] for a in axes))


def mask_once(ctx: Context, ys: list[Shared], row_axes: int = 2, op: str = "mask_once") -> list[MaskedShared]:
    """Put fresh dealer masks B on each y and open every F = y − B to both, in one round.

    A row is y's first `row_axes` axes (the cache's batch and position); its descriptor
    (request number, word offset) names its mask to the dealer.
    Cost: 8·Σ|y| bytes per party, 1 round (once per value, e.g. per appended cache row)."""
    rider, _ = mask_once_rider(ctx, ys, row_axes)
    rider.land(ctx.channel.open(op, rider.payload))
    return rider.result


def mask_once_rider(ctx: Context, ys: list[Shared], row_axes: int = 2) -> tuple[Rider, list[MaskedShared]]:
    """`mask_once` as a `Rider` (its opening can travel in another protocol's message),
    and the values as they are before the round: masks and row descriptors set, opened
    values still zero — what a product with them needs to ask the dealer for its triple
    (`matmul_masked(..., riders=, completed=)`)."""
    masks = [ctx.dealer.random_shared(y.shape) for y in ys]
    pending = []
    for y, (b, nonce) in zip(ys, masks):
        lead, width = y.shape[:row_axes], int(np.prod(y.shape[row_axes:], dtype=np.int64))
        offsets = jnp.arange(int(np.prod(lead, dtype=np.int64)), dtype=jnp.int64).reshape(lead) * width
        rows = jnp.stack([jnp.broadcast_to(nonce, lead), offsets], axis=-1)
        pending.append(MaskedShared(b.with_frac(y.frac), jnp.zeros(y.shape, DTYPE), rows))

    def finish(opened):
        return [dataclasses.replace(m, opened=f) for m, f in zip(pending, opened)]

    return Rider([y - b.with_frac(y.frac) for y, (b, _) in zip(ys, masks)], finish), pending


def matmul_masked(ctx: Context, x: Shared, y: MaskedShared, op: str = "matmul_masked", riders=(),
                  completed=None) -> Shared:
    """x @ Y for shared x (..., m, k) and a masked-once Y (..., k, n), untruncated.

    1. Dealer: fresh A (shape of x) and shares of C = A @ B.
    2. Open E = x − A to both (one round).
    3. x @ Y = (E + A)(F + B) = E@F + E@[B] + [A]@F + [C]   (party 0 adds E@F).
    Cost: 8·|x| bytes per party, 1 round — Y's side is never reopened.
    `riders`: steps whose openings travel with E — e.g. the `mask_once_rider` of rows Y
    is about to hold: the triple needs only Y's masks and row descriptors, known before
    the round; `completed()` gives Y with its opened values after it.
    """
    a, c = ctx.dealer.operand_triple(y.mask, y.rows, y.perm or tuple(range(y.mask.ndim)), x.shape)
    e = ctx.channel.open(op, x - a.with_frac(x.frac), riders=riders)
    y = completed() if completed is not None else y
    z = c + y.mask.with_frac(0).map(lambda v: ring_matmul(e, v)) + a.map(lambda v: ring_matmul(v, y.opened))
    return z.add_public(ring_matmul(e, y.opened)).with_frac(x.frac + y.frac)


# --- truncation -----------------------------------------------------------------------
def truncate(ctx: Context, x: Shared, bits: int, op: str = "trunc") -> Shared:
    """Divide by 2^bits with at most one unit of error in the last place.

    Dealer-assisted one-round truncation (the idea of SPU's TruncAPr / Escudero et al.'s
    probabilistic truncation with a known-MSB mask). For |x| < 2^62 (ring units):
    1. z' = x + 2^62 ∈ [0, 2^63) (party 0 adds the constant).
    2. Dealer: random r with shares of r, ⌊r / 2^bits⌋ and msb(r).
    3. Open c = z' + r mod 2^64 to both (one round).
    4. The sum wrapped iff msb(r) = 1 and msb(c) = 0, so (no wrap test needed)
         ⌊z'/2^bits⌋ ≈ ⌊c/2^bits⌋ − ⌊r/2^bits⌋ + msb(r)·(1 − msb(c))·2^(64−bits)
       up to the borrow of the low bits (0 or 1), then subtract 2^(62−bits).

    Result: ⌊x/2^bits⌋ or ⌊x/2^bits⌋ + 1, i.e. |error| < 1 ulp; never a wrap-around.
    Cost: 8·n bytes per party, 1 round; dealer: 16·n bytes of corrections to the server.
    """
    if bits == 0:
        return x
    if not 0 < bits < 62:
        raise ValueError(f"truncate: bits must be in (0, 62), got {bits}")
    r, r_hi, r_msb = ctx.dealer.trunc_pair(x.shape, bits)
    c = ctx.channel.open(op, x.add_public(np.uint64(1 << 62)) + r.with_frac(x.frac))
    not_msb_c = np.uint64(1) - msb(c)
    y = r_msb.mul_public(not_msb_c << np.uint64(64 - bits)) - r_hi
    y = y.add_public((c >> np.uint64(bits)) - np.uint64(1 << (62 - bits)))
    return y.with_frac(x.frac - bits)


class Fused(NamedTuple):
    """What `truncate_products` returns: the truncated stack and, each in the order asked,
    the partner products, the pair products and the selections."""

    y: Shared
    partners: list
    pairs: list
    selects: list


def truncate_products(ctx: Context, z: Shared, bits: int, partners=(), pairs=(), selects=(), riders=(),
                      op: str = "trunc") -> Fused:
    """Truncate a stack z (S, ...) by 2^bits and, in the same round, multiply the results:
    y_i·w for each partner (i, w) (w shared; all partners of one shape, which the entries
    broadcast to: a row's scalar times the row), y_i·y_j for each pair
    (i, j), and s·y_i for each selection (i, s) (s a XOR-shared bit in bit 0) — products
    that would otherwise cost a round after the truncation. `riders`: other protocols'
    independent one-round steps (`mpc.channel.Rider`) whose openings travel in the same
    message (e.g. `compare.select_bit_begin`, `fss.msb_dcf_begin`).

    Why one round suffices: `truncate` opens c = z + 2^62 + r, after which
        y_i = P_i − R_i,   P_i = ⌊c_i/2^f⌋ − 2^(62−f) public,
                           R_i = h_i − β_i·m_i, h = r >> f, m = msb(r), β_i = (1 − msb(c_i))·2^(64−f)
    so y_i is in *masked form*: its mask R_i is a public combination of values the dealer
    made. A product then needs no opening of y_i (R_i plays the Beaver mask):
        y_i·w   = P_i·e + P_i·[b] − e·[R_i] − [R_i·b],   e = w − b opened with c,
        y_i·y_j = P_i·P_j − P_i·[R_j] − P_j·[R_i] + [R_i·R_j],
        s·y_i   = d·P_i − d·[R_i] + (1 − 2d)·(P_i·[t] − [t·R_i]),   d = s ⊕ t opened with c,
    where [R_i·b] = [h_i·b] − β_i·[m_i·b], [t·R_i] = [t·h_i] − β_i·[t·m_i], and [R_i·R_j]
    expands into the dealer's pieces [h_i·h_j], [h_i·m_j], [m_i·h_j], [m_i·m_j] (for a
    square [h_i²], [h_i·m_i]; m² = m).

    Returns `Fused`: y (S, ...) at scale z.frac − bits, [y_i·w] untruncated at
    y.frac + w.frac, [y_i·y_j] untruncated at 2·y.frac, [s·y_i] at y.frac.
    Cost: 1 round; per party 8·S·n + 8·P·n' + B·⌈n/8⌉ bytes (plus the riders') for n
    elements per entry, P partners of n' elements and B selections; dealer (to the
    server): 8·(n·(2·S + Σ_pairs (2 for a square, 4 otherwise) + 3·B) + 2·P·n') bytes.
    Error: y as `truncate` (⌊z/2^f⌋ or one more, |z| < 2^62 ring units); the products are
    exact in the ring given y.
    """
    if not 0 < bits < 62:
        raise ValueError(f"truncate_products: bits must be in (0, 62), got {bits}")
    partners, pairs, selects = list(partners), [(int(i), int(j)) for i, j in pairs], list(selects)
    elem = tuple(z.shape[1:])
    pshape = tuple(partners[0][1].shape) if partners else elem
    if partners and (np.broadcast_shapes(elem, pshape) != pshape
                     or any(tuple(w.shape) != pshape for _, w in partners)):
        raise ValueError(f"truncate_products: partners must share one shape the entries {elem} broadcast to")
    for _, b in selects:
        if tuple(b.shape) != elem:
            raise ValueError(f"truncate_products: a selection bit has shape {b.shape}, entries {elem}")
    (r, hi, m), masks, pieces, sel = ctx.dealer.trunc_products(
        z.shape, bits, [i for i, _ in partners], pairs, [i for i, _ in selects],
        partner_shape=None if pshape == elem else pshape)
    payload = [z.add_public(np.uint64(1 << 62)) + r.with_frac(z.frac)]
    payload += [w - masks[0][k].with_frac(w.frac) for k, (_, w) in enumerate(partners)]
    payload += [b ^ sel[0][k] for k, (_, b) in enumerate(selects)]
    opened = ctx.channel.open(op, payload, bits=1, riders=riders)
    c, es, ds = opened[0], opened[1:1 + len(partners)], opened[1 + len(partners):]
    beta = (np.uint64(1) - msb(c)) << np.uint64(64 - bits)  # public, per element
    p_pub = (c >> np.uint64(bits)) - np.uint64(1 << (62 - bits))
    mask = hi - m.mul_public(beta)  # R
    f = z.frac - bits
    y = (-mask).add_public(p_pub).with_frac(f)
    with_partners = []
    for k, (i, w) in enumerate(partners):
        b, hb, mb = masks[0][k], masks[1][k], masks[2][k]
        rb = hb - mb.mul_public(beta[i])
        out = b.mul_public(p_pub[i]) - mask[i].mul_public(es[k]) - rb
        with_partners.append(out.add_public(p_pub[i] * es[k]).with_frac(f + w.frac))
    products = []
    for (i, j), pc in zip(pairs, pieces):
        if i == j:
            hh, hm = pc
            rr = hh - hm.mul_public(beta[i] * np.uint64(2)) + m[i].mul_public(beta[i] * beta[i])
        else:
            hh, hm, mh, mm = pc
            rr = hh - hm.mul_public(beta[j]) - mh.mul_public(beta[i]) + mm.mul_public(beta[i] * beta[j])
        out = rr - mask[j].mul_public(p_pub[i]) - mask[i].mul_public(p_pub[j])
        products.append(out.add_public(p_pub[i] * p_pub[j]).with_frac(2 * f))
    selected = []
    for k, (i, _) in enumerate(selects):
        d = ds[k] & np.uint64(1)
        one_minus_2d = np.uint64(1) - (d << np.uint64(1))
        tr = sel[2][k] - sel[3][k].mul_public(beta[i])
        out = (sel[1][k].mul_public(p_pub[i]) - tr).mul_public(one_minus_2d) - mask[i].mul_public(d)
        selected.append(out.add_public(d * p_pub[i]).with_frac(f))
    return Fused(y, with_partners, products, selected)
