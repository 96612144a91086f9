"""The dealer: correlated randomness for the online protocols.

Trust: a third party that colludes with neither client nor server (CrypTen's TTP, SPU's
beaver server, SIGMA's dealer). It learns nothing of the inputs: it never sees a share of
the client's or server's data, only randomness it made itself.

Seed compression and random access: party p holds a 16-byte key k_p it shares with the
dealer. The protocols ask for material in program order, and both parties number their
requests identically (request i of a session); the words of request i for party p are
`prg.request_words(k_p, i, n)`. So each party expands its own words itself, and only the
*corrections* travel: the one share of a correlated value (c = a·b, r >> f, …) that
cannot be random, computed by whoever holds both keys (the dealer process; in simulation,
the same function in-graph) and sent to one party — or, for material whose correction
is common to both parties (a DCF's correction words), the same correction to each.
Only corrections and keys count as dealer bytes in the ledger, per receiving party;
each kind's docstring below states its correction bytes.

A kind of material is three pure functions (`Kind`): how many words each party draws,
the correction (from both parties' words), and how a party assembles its shares from its
own words and, if it is a receiver, the correction. `Dealer` (simulation: both
parties, corrections in-graph) and `PartyDealer` (one party: its words, corrections
fetched from the dealer) run the same functions; so does the dealer process
(`mpc.dealer_service`), which makes a request's correction from the request's
description alone.

Two kinds depend on earlier material: a weight product needs the weight's fixed mask B
(drawn at set-up from the server's key; its request number is the weight's handle), and a
product with a masked-once operand (the KV cache) needs that operand's mask, named row by
row by (request number, word offset) descriptors that travel with the cache. The dealer
rebuilds either from the keys; it learns the cache's row layout (its length), which the
two parties know anyway.

Inside `mpc.secure_jit` the words come from the host through an ordered `io_callback`
(one per request, in program order), so every call of a compiled program draws fresh
randomness and two requests never share a nonce.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from mpc import dcf
from mpc.prg import KEY_BYTES, derive_keys, request_words
from mpc.ring import DTYPE, msb, ring_matmul
from mpc.shares import CLIENT, PARTIES, SERVER, Shared, XorShared, local, local_xor

_ONE = np.uint64(1)
PRODUCTS = {"matmul": ring_matmul, "mul": jnp.multiply}


def _n(shape) -> int:
    return int(math.prod(shape))


def _split(flat, shapes) -> list:
    out, at = [], 0
    for s in shapes:
        out.append(flat[at:at + _n(s)].reshape(s))
        at += _n(s)
    return out


@dataclasses.dataclass(frozen=True)
class Request:
    """What a protocol asks the dealer for: a kind, shapes and static integer arguments.
    Public (it depends only on the program), so it may travel to the dealer."""

    kind: str
    shapes: tuple[tuple[int, ...], ...]
    args: tuple = ()

    def encode(self) -> np.ndarray:
        """[kind index, #shapes, (ndim, dims…)…, #args, args…] as int64 (args: ints or
        product names)."""
        out = [KIND_NAMES.index(self.kind), len(self.shapes)]
        for s in self.shapes:
            out += [len(s), *s]
        args = [list(PRODUCTS).index(a) if isinstance(a, str) else int(a) for a in self.args]
        return np.asarray(out + [len(args), *args], np.int64)

    @classmethod
    def decode(cls, words: np.ndarray) -> "Request":
        w = [int(x) for x in np.asarray(words, np.int64)]
        if not w or not 0 <= w[0] < len(KIND_NAMES):
            raise ValueError("dealer request: unknown kind")
        kind, at = KIND_NAMES[w[0]], 2
        shapes = []
        for _ in range(w[1]):
            nd = w[at]
            shapes.append(tuple(w[at + 1:at + 1 + nd]))
            at += 1 + nd
        nargs = w[at]
        args = tuple(w[at + 1:at + 1 + nargs])
        if kind in ("weight_triple", "operand_triple"):
            args = (list(PRODUCTS)[args[0]], *args[1:])
        return cls(kind, tuple(shapes), args)


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of material. `words(req) -> (n0, n1)`; `correct(req, w0, w1, extra) ->
    list of arrays` for the receiver(s) `to` (None: no correction); `assemble(req, p,
    words, corr) -> tuple` of party p's outputs (corr None unless p receives it).

    `to`: the party that receives the correction, or a tuple of parties that each receive
    the same correction (its bytes count once per receiver)."""

    words: Callable
    assemble: Callable
    correct: Callable | None = None
    to: int | tuple[int, ...] = SERVER

    @property
    def receivers(self) -> tuple[int, ...]:
        """The parties the correction goes to (none without a correction)."""
        if self.correct is None:
            return ()
        return self.to if isinstance(self.to, tuple) else (self.to,)


# --- the kinds ------------------------------------------------------------------------------
def _triple_words(req):
    n = _n(req.shapes[0])
    return 3 * n, 2 * n


def _triple_correct(req, w0, w1, extra):
    """c = a·b: 8·n bytes to the server."""
    s = req.shapes[0]
    a0, b0, c0 = _split(w0, [s] * 3)
    a1, b1 = _split(w1, [s] * 2)
    return [(a0 + a1) * (b0 + b1) - c0]


def _triple_assemble(req, p, w, corr):
    s = req.shapes[0]
    return tuple(_split(w, [s] * 3)) if p == CLIENT else (*_split(w, [s] * 2), corr[0])


def _square_words(req):
    n = _n(req.shapes[0])
    return 2 * n, n


def _square_correct(req, w0, w1, extra):
    """(a, a²): 8·n bytes to the server."""
    s = req.shapes[0]
    a0, c0 = _split(w0, [s] * 2)
    a = a0 + w1.reshape(s)
    return [a * a - c0]


def _square_assemble(req, p, w, corr):
    s = req.shapes[0]
    return tuple(_split(w, [s] * 2)) if p == CLIENT else (w.reshape(s), corr[0])


def _matmul_words(req):
    sa, sb, sc = req.shapes
    return _n(sa) + _n(sb) + _n(sc), _n(sa) + _n(sb)


def _matmul_correct(req, w0, w1, extra):
    """C = A @ B: 8·|C| bytes to the server."""
    sa, sb, sc = req.shapes
    a0, b0, c0 = _split(w0, [sa, sb, sc])
    a1, b1 = _split(w1, [sa, sb])
    return [ring_matmul(a0 + a1, b0 + b1) - c0]


def _matmul_assemble(req, p, w, corr):
    sa, sb, sc = req.shapes
    return tuple(_split(w, [sa, sb, sc])) if p == CLIENT else (*_split(w, [sa, sb]), corr[0])


def _weight_mask_words(req):
    return 0, _n(req.shapes[0])


def _weight_mask_assemble(req, p, w, corr):
    return (w.reshape(req.shapes[0]),) if p == SERVER else (None,)


def _weight_triple_words(req):
    # shapes: A, then (C_j, B_j) for each weight
    return _n(req.shapes[0]) + sum(_n(s) for s in req.shapes[1::2]), 0


def _weight_triple_correct(req, w0, w1, extra):
    """C_j = A ∘ B_j for the weights' fixed masks B_j: 8·Σ|C_j| bytes to the server.
    extra: (the masks, a bit-identical implementation of the product or None)."""
    masks, impl = extra
    product = impl or PRODUCTS[req.args[0]]
    sa, cs = req.shapes[0], req.shapes[1::2]
    a, *c0 = _split(w0, [sa, *cs])
    return [product(a, m) - c for m, c in zip(masks, c0)]


def _weight_triple_assemble(req, p, w, corr):
    sa, cs = req.shapes[0], req.shapes[1::2]
    if p == CLIENT:
        return tuple(_split(w, [sa, *cs]))
    return (None, *corr)


def _operand_words(req):
    sa, sc = req.shapes[0], req.shapes[1]
    return _n(sa) + _n(sc), _n(sa)


def _operand_correct(req, w0, w1, mask):
    """C = A ∘ B for a fixed shared operand mask B: 8·|C| bytes to the server."""
    product = PRODUCTS[req.args[0]]
    sa, sc = req.shapes[0], req.shapes[1]
    a0, c0 = _split(w0, [sa, sc])
    return [product(a0 + w1.reshape(sa), mask) - c0]


def _operand_assemble(req, p, w, corr):
    sa, sc = req.shapes[0], req.shapes[1]
    return tuple(_split(w, [sa, sc])) if p == CLIENT else (w.reshape(sa), corr[0])


def _ot_words(req):
    rows, width = req.shapes[0]
    return rows, rows * width


def _ot_correct(req, w0, w1, extra):
    """R[t] for the client's random index t: 8 bytes per row to the client."""
    rows, width = req.shapes[0]
    t = (w0 % np.uint64(width)).astype(jnp.int32)
    return [jnp.take_along_axis(w1.reshape(rows, width), t[:, None], axis=1)[:, 0]]


def _ot_assemble(req, p, w, corr):
    rows, width = req.shapes[0]
    if p == CLIENT:  # (t, R[t])
        return (w % np.uint64(width)).astype(jnp.int32), corr[0]
    return (w.reshape(rows, width),)


def _trunc_words(req):
    n = _n(req.shapes[0])
    return 3 * n, n


def _trunc_correct(req, w0, w1, extra):
    """(r >> f, msb(r)): 16·n bytes to the server."""
    s, bits = req.shapes[0], np.uint64(req.args[0])
    r0, hi0, m0 = _split(w0, [s] * 3)
    r = r0 + w1.reshape(s)
    return [(r >> bits) - hi0, msb(r) - m0]


def _trunc_assemble(req, p, w, corr):
    s = req.shapes[0]
    return tuple(_split(w, [s] * 3)) if p == CLIENT else (w.reshape(s), *corr)


def _trunc_products_layout(req):
    """(stack shape, element shape, n, partner stack indices, product pairs, selected
    stack indices, the partners' shape) of a `trunc_products` request; shapes = (stack,
    partners' shape); args = (bits, P, i_1..i_P, Q, a_1, b_1, ..., a_Q, b_Q, B, s_1..s_B).
    The partners' shape is one the element shape broadcasts to (products take it)."""
    stack = req.shapes[0]
    elem = tuple(stack[1:])
    pshape = tuple(req.shapes[1]) if len(req.shapes) > 1 else elem
    at = 1
    n_partners = req.args[at]
    partners = tuple(req.args[at + 1:at + 1 + n_partners])
    at += 1 + n_partners
    n_pairs = req.args[at]
    flat = req.args[at + 1:at + 1 + 2 * n_pairs]
    at += 1 + 2 * n_pairs
    selects = tuple(req.args[at + 1:at + 1 + req.args[at]])
    return stack, elem, _n(elem), partners, tuple(zip(flat[0::2], flat[1::2])), selects, pshape


def _pair_pieces(i, j) -> int:
    """Dealer pieces of the product of stack entries i and j: h_i·h_j, h_i·m_j, m_i·h_j,
    m_i·m_j — or h_i², h_i·m_i for a square (m_i² = m_i, a bit)."""
    return 2 if i == j else 4


def _trunc_products_words(req):
    stack, elem, n, partners, pairs, selects, pshape = _trunc_products_layout(req)
    s, p, q = _n(stack), len(partners), len(selects)
    pieces = sum(_pair_pieces(i, j) for i, j in pairs)
    pn = _n(pshape)
    return 3 * s + 3 * p * pn + pieces * n + 4 * q * n, s + p * pn + q * n


def _trunc_products_correct(req, w0, w1, extra):
    """Truncation pairs (r >> f, msb(r)) of the stack, the partners' products
    [h_i·b_k], [m_i·b_k] with their Beaver masks b_k, each pair's pieces, and per
    selection a random bit t (XOR and arithmetic shares) with [t·h_i], [t·m_i]: 8 bytes
    per piece per element to the server (2 per stack element, 2 per partner, 2 per
    square, 4 per other pair, 3 per selection)."""
    stack, elem, n, partners, pairs, selects, pshape = _trunc_products_layout(req)
    bits = np.uint64(req.args[0])
    p, q = len(partners), len(selects)
    n_pieces = sum(_pair_pieces(i, j) for i, j in pairs)
    r0, hi0, m0 = _split(w0[:3 * _n(stack)], [stack] * 3)
    rest0 = w0[3 * _n(stack):]
    pn = p * _n(pshape)
    r1, b1, t1 = _split(w1, [stack, (p, *pshape), (q, *elem)])
    b0, hb0, mb0 = _split(rest0[:3 * pn], [(p, *pshape)] * 3)
    pieces0 = rest0[3 * pn:3 * pn + n_pieces * n]
    t0, ts0, th0, tm0 = _split(rest0[3 * pn + n_pieces * n:], [(q, *elem)] * 4)
    r = r0 + r1
    hi, m = r >> bits, msb(r)
    out = [hi - hi0, m - m0]
    if p:
        b = b0 + b1
        idx = np.asarray(partners)
        out += [hi[idx] * b - hb0, m[idx] * b - mb0]
    at = 0
    for i, j in pairs:
        want = [hi[i] * hi[j], hi[i] * m[j]] + ([] if i == j else [m[i] * hi[j], m[i] * m[j]])
        for v in want:
            out.append(v - pieces0[at:at + n].reshape(elem))
            at += n
    if q:
        t = (t0 ^ t1) & _ONE
        idx = np.asarray(selects)
        out += [t - ts0, t * hi[idx] - th0, t * m[idx] - tm0]
    return out


def _trunc_products_assemble(req, p_, w, corr):
    """(r, r >> f, msb(r)) of the stack, the partners' (b, h·b, m·b) stacked (P, ...) or
    None, a tuple per pair of its pieces, and the selections' (t as a XOR bit, [t],
    [t·h], [t·m]) stacked (B, ...) or None."""
    stack, elem, n, partners, pairs, selects, pshape = _trunc_products_layout(req)
    p, q = len(partners), len(selects)
    counts = [_pair_pieces(i, j) for i, j in pairs]
    pn = p * _n(pshape)
    if p_ == CLIENT:
        r, hi, m = _split(w[:3 * _n(stack)], [stack] * 3)
        rest = w[3 * _n(stack):]
        b, hb, mb = _split(rest[:3 * pn], [(p, *pshape)] * 3)
        flat = _split(rest[3 * pn:3 * pn + sum(counts) * n], [elem] * sum(counts))
        t, ts, th, tm = _split(rest[3 * pn + sum(counts) * n:], [(q, *elem)] * 4)
    else:
        r, b, t = _split(w, [stack, (p, *pshape), (q, *elem)])
        hi, m, *corr = corr
        hb, mb = (corr[0], corr[1]) if p else (None, None)
        corr = corr[2 if p else 0:]
        flat = corr[:sum(counts)]
        ts, th, tm = corr[sum(counts):] if q else (None, None, None)
    pieces, at = [], 0
    for c in counts:
        pieces.append(tuple(flat[at:at + c]))
        at += c
    return r, hi, m, (b, hb, mb) if p else None, pieces, (t & _ONE, ts, th, tm) if q else None


def _random_words(req):
    n = _n(req.shapes[0])
    return n, n


def _random_assemble(req, p, w, corr):
    return (w.reshape(req.shapes[0]),)


def _and_correct(req, w0, w1, extra):
    """c = a & b on words: 8·n bytes to the server."""
    s = req.shapes[0]
    a0, b0, c0 = _split(w0, [s] * 3)
    a1, b1 = _split(w1, [s] * 2)
    return [((a0 ^ a1) & (b0 ^ b1)) ^ c0]


def _bit_words(req):
    n = _n(req.shapes[0])
    return 2 * n, n


def _bit_correct(req, w0, w1, extra):
    """A random bit r as XOR and arithmetic shares: 8·n bytes to the server."""
    s = req.shapes[0]
    r0, s0 = _split(w0, [s] * 2)
    return [((r0 ^ w1.reshape(s)) & _ONE) - s0]


def _bit_assemble(req, p, w, corr):
    s = req.shapes[0]
    if p == CLIENT:
        r0, s0 = _split(w, [s] * 2)
        return r0 & _ONE, s0
    return w.reshape(s) & _ONE, corr[0]


def _bit_select_words(req):
    n = _n(req.shapes[0])
    return 4 * n, 2 * n


def _bit_select_correct(req, w0, w1, extra):
    """(r XOR-shared, [r], [a], [r·a]): 16·n bytes to the server."""
    s = req.shapes[0]
    r0, a0, rs0, ras0 = _split(w0, [s] * 4)
    r1, a1 = _split(w1, [s] * 2)
    r = (r0 ^ r1) & _ONE
    return [r - rs0, r * (a0 + a1) - ras0]


def _bit_select_assemble(req, p, w, corr):
    s = req.shapes[0]
    if p == CLIENT:
        r0, a0, rs0, ras0 = _split(w, [s] * 4)
        return r0 & _ONE, rs0, a0, ras0
    r1, a1 = _split(w, [s] * 2)
    return r1 & _ONE, corr[0], a1, corr[1]


def _dcf_msb_words(req):
    n = _n(req.shapes[0])
    return 3 * n, 3 * n  # root seed (2 words) and a share of r (1 word) per element


def _dcf_msb_split(req, w):
    n = _n(req.shapes[0])
    return w[:2 * n].reshape(n, 2), w[2 * n:3 * n]


def _dcf_msb_correct(req, w0, w1, extra):
    """DCF keys for the sign of n-bit values (`mpc.dcf.msb_keygen`, ℓ-bit outputs) under
    r = r_0 + r_1 mod 2^n, each party's root seed and r_p its own words: the correction
    words only, the same to both parties — 8·N·W bytes to EACH party for N elements,
    W = `dcf.correction_words(n − 1, ℓ)` words per element (21 at n = 16, ℓ = 1; 119 at
    n = 64; the module docstring of `mpc.dcf`)."""
    bits, out_bits = req.args
    (root0, r0), (root1, r1) = _dcf_msb_split(req, w0), _dcf_msb_split(req, w1)
    r = (r0 + r1) & np.uint64((1 << bits) - 1 if bits < 64 else 2**64 - 1)
    key0, _ = dcf.msb_keygen(jnp.stack([root0, root1]), r, n_bits=bits, out_bits=out_bits)
    return [dcf.pack_corrections(key0, n_bits=bits - 1, out_bits=out_bits)]


def _dcf_msb_assemble(req, p, w, corr):
    bits, out_bits = req.args
    root, r = _dcf_msb_split(req, w)
    key = dcf.unpack_corrections(corr[0], dcf.seed_words(root), n_bits=bits - 1, out_bits=out_bits)
    return r.reshape(req.shapes[0]), key


KINDS: dict[str, Kind] = {
    "triple": Kind(_triple_words, _triple_assemble, _triple_correct),
    "square": Kind(_square_words, _square_assemble, _square_correct),
    "matmul_triple": Kind(_matmul_words, _matmul_assemble, _matmul_correct),
    "weight_mask": Kind(_weight_mask_words, _weight_mask_assemble),
    "weight_triple": Kind(_weight_triple_words, _weight_triple_assemble, _weight_triple_correct),
    "operand_triple": Kind(_operand_words, _operand_assemble, _operand_correct),
    "index_ot": Kind(_ot_words, _ot_assemble, _ot_correct, to=CLIENT),
    "trunc_pair": Kind(_trunc_words, _trunc_assemble, _trunc_correct),
    "random_shared": Kind(_random_words, _random_assemble),
    "and_triple": Kind(_triple_words, _triple_assemble, _and_correct),
    "bit_pair": Kind(_bit_words, _bit_assemble, _bit_correct),
    "bit_select": Kind(_bit_select_words, _bit_select_assemble, _bit_select_correct),
    "dcf_msb": Kind(_dcf_msb_words, _dcf_msb_assemble, _dcf_msb_correct, to=(CLIENT, SERVER)),
    "trunc_products": Kind(_trunc_products_words, _trunc_products_assemble, _trunc_products_correct),
}
KIND_NAMES = tuple(KINDS)


def correction_bytes(req: Request) -> int:
    """Bytes of the correction of one request (what the dealer sends for it to each of
    its receivers)."""
    if KINDS[req.kind].correct is None:
        return 0
    return 8 * sum(_n(s) for s in _correction_shapes(req))


# --- cached operands: row descriptors ---------------------------------------------------------
def operand_mask(rows: np.ndarray, row_shape: tuple[int, ...], words_of: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """Rebuild a masked-once operand's mask B (rows.shape[:-1] + row_shape) from its row
    descriptors: rows[..., 0] the request number that masked the row (−1: never written,
    mask 0), rows[..., 1] the row's word offset in that request; `words_of(nonce, n)` the
    request's mask words (both parties' words summed)."""
    width = _n(row_shape)
    flat = rows.reshape(-1, 2)
    out = np.zeros((flat.shape[0], width), np.uint64)
    for nonce in np.unique(flat[:, 0]):
        if nonce < 0:
            continue
        sel = np.nonzero(flat[:, 0] == nonce)[0]
        offsets = flat[sel, 1]
        words = words_of(int(nonce), int(offsets.max()) + width)
        out[sel] = words[offsets[:, None] + np.arange(width)[None]]
    return out.reshape(*rows.shape[:-1], *row_shape)


# --- the dealers ------------------------------------------------------------------------------
class Dealer:
    """Correlated randomness for the parties present.

    The simulation's dealer (default) holds both parties' keys and computes corrections
    in-graph; `PartyDealer` hands one party its own material. Keys: k_0, k_1 (the dealer's
    with each party), k_01 (the client and server's own, for input sharing; the dealer
    never holds it in a real run) and each party's private key (its own randomness).
    """

    parties: tuple[int, ...] = PARTIES

    def __init__(self, channel, seed: bytes | None = None, keys: dict | None = None) -> None:
        self.channel = channel
        keys = keys if keys is not None else session_keys(seed)
        self.keys = keys
        self._next = 0  # the next request number (host side, program order)
        channel.dealer("keys", KEY_BYTES, KEY_BYTES)

    # --- requests ----------------------------------------------------------------------
    def _host_words(self, counts: dict[int, int], key_of: Callable[[int], bytes]) -> np.ndarray:
        nonce = self._next
        self._next += 1
        parts = [request_words(key_of(p), nonce, counts[p]) for p in self.parties]
        return np.concatenate([*parts, np.asarray([nonce], np.uint64)])

    def _draw(self, counts: dict[int, int], key_of: Callable[[int], bytes],
              handles: Sequence[jax.Array] = (), req: Request | None = None):
        """Each present party's words of the next request, and its number (in-graph)."""
        total = sum(counts[p] for p in self.parties)
        flat = io_callback(lambda: self._host_words(counts, key_of), jax.ShapeDtypeStruct((total + 1,), DTYPE),
                           ordered=True)
        words, at = {}, 0
        for p in self.parties:
            words[p] = flat[at:at + counts[p]]
            at += counts[p]
        return words, flat[total].astype(jnp.int64)

    def _corrections(self, req: Request, words, extra, handles):
        kind = KINDS[req.kind]
        return kind.correct(req, words[CLIENT], words[SERVER], extra)

    # --- offline/online split ------------------------------------------------------------
    # `mpc.secure_jit` with `Context(split=True)` traces a program twice: once recording
    # every draw's result (the offline program: the dealer's work, whose outputs are the
    # material), once replaying them from the online program's inputs. Material never
    # depends on the parties' values, so the two see the same draws in the same order.
    _record: list | None = None
    _replay: list | None = None

    @contextlib.contextmanager
    def recording(self, into: list):
        """While tracing: append each draw's result (outputs, request number) to `into`."""
        self._record = into
        try:
            yield
        finally:
            self._record = None

    @contextlib.contextmanager
    def replaying(self, material: list):
        """While tracing: take each draw's result from `material` (what `recording` saw,
        as traced inputs) instead of drawing."""
        self._replay = list(material)
        try:
            yield
            if self._replay:
                raise RuntimeError(f"the online program used {len(material) - len(self._replay)} of "
                                   f"{len(material)} pieces of offline material")
        finally:
            self._replay = None

    def _drawn(self, draw: Callable):
        """`draw()`'s result, recorded or replayed (see `recording`)."""
        if self._replay is not None:
            if not self._replay:
                raise RuntimeError("the online program asked for more material than the offline one drew")
            return self._replay.pop(0)
        result = draw()
        if self._record is not None:
            self._record.append(result)
        return result

    def derived(self, fn: Callable, *operands):
        """`fn(*operands)`, where the operands are dealer material and values fixed for
        the session (never a party's online values): offline work. A split program
        computes it in its offline program and replays the result online, like a draw
        (e.g. the client's A ∘ F of a weight product: a weight-sized ring product that
        would otherwise dominate a decoding step's online compute)."""
        return self._drawn(lambda: fn(*operands))

    def material(self, req: Request, extra=None, handles: Sequence[jax.Array] = ()):
        """Party-by-party outputs of one request: ({p: outputs}, request number)."""
        kind = KINDS[req.kind]
        to = kind.receivers
        if to:
            nbytes = correction_bytes(req)
            self.channel.dealer(req.kind, nbytes if CLIENT in to else 0, nbytes if SERVER in to else 0)

        def draw():
            n0, n1 = kind.words(req)
            words, nonce = self._draw({CLIENT: n0, SERVER: n1}, lambda p: self.keys[p], handles, req)
            corr = self._corrections(req, words, extra, handles) if any(p in to for p in self.parties) else None
            return {p: kind.assemble(req, p, words[p], corr if p in to else None) for p in self.parties}, nonce

        return self._drawn(draw)

    def _shared(self, outs, i: int, frac: int = 0) -> Shared:
        return local(self.parties, lambda p: outs[p][i], frac)

    def _xor(self, outs, i: int) -> XorShared:
        return local_xor(self.parties, lambda p: outs[p][i])

    # --- arithmetic correlations -----------------------------------------------------------
    def triple(self, shape) -> tuple[Shared, Shared, Shared]:
        """Beaver triple (a, b, c = a·b), elementwise. Correction: 8·|shape| bytes."""
        outs, _ = self.material(Request("triple", (tuple(shape),)))
        return self._shared(outs, 0), self._shared(outs, 1), self._shared(outs, 2)

    def square_pair(self, shape) -> tuple[Shared, Shared]:
        """(a, a²). Correction: 8·|shape| bytes."""
        outs, _ = self.material(Request("square", (tuple(shape),)))
        return self._shared(outs, 0), self._shared(outs, 1)

    def matmul_triple(self, shape_a, shape_b) -> tuple[Shared, Shared, Shared]:
        """(A, B, C = A @ B) for shared × shared products. Correction: 8·|C| bytes."""
        shape_c = jax.eval_shape(ring_matmul, jax.ShapeDtypeStruct(shape_a, DTYPE),
                                 jax.ShapeDtypeStruct(shape_b, DTYPE)).shape
        outs, _ = self.material(Request("matmul_triple", (tuple(shape_a), tuple(shape_b), tuple(shape_c))))
        return self._shared(outs, 0), self._shared(outs, 1), self._shared(outs, 2)

    def weight_mask(self, shape) -> tuple[jax.Array | None, jax.Array]:
        """Fixed mask B of a server weight, drawn from the server's key: no bytes. Returns
        (B for the server, None for the client; the request number: the weight's handle,
        which names B to the dealer in every later `weight_triple`)."""
        outs, nonce = self.material(Request("weight_mask", (tuple(shape),)))
        return (outs[SERVER][0] if SERVER in self.parties else None), nonce

    def weight_triple(self, masks: list, handles: list, shape_a, product: str = "matmul",
                      mask_shapes: Sequence[tuple[int, ...]] = (), transposed: Sequence[bool] = (),
                      impl: Callable | None = None):
        """For x ∘ W_j with the weights' fixed masks B_j (∘ = `product`, "matmul" or "mul"):
        ONE client mask A for x and shares of every C_j = A ∘ B_j (the same masked input
        serves all weights that read x).

        A is party 0's alone; party 1 receives the corrections of the C_j.
        Correction: 8·Σ|C_j| bytes. `masks`: the B_j values (the simulation computes the
        corrections itself); `handles`: their request numbers and `transposed` whether each
        is the transpose of the mask drawn there (what a party process sends the dealer).
        `impl`: an implementation of `product` with bounded memory (vocabulary-sized
        weights), bit-identical to it.
        Returns (A, or None at the server; [C_j shared]).
        """
        fn = PRODUCTS[product]
        shapes = [tuple(shape_a)]
        for ms in mask_shapes:
            shapes += [tuple(jax.eval_shape(fn, jax.ShapeDtypeStruct(shape_a, DTYPE),
                                            jax.ShapeDtypeStruct(ms, DTYPE)).shape), tuple(ms)]
        req = Request("weight_triple", tuple(shapes), (product, *map(int, transposed)))
        outs, _ = self.material(req, extra=(masks, impl), handles=handles)
        a = outs[CLIENT][0] if CLIENT in self.parties else None
        return a, [self._shared(outs, 1 + j) for j in range(len(mask_shapes))]

    def operand_triple(self, mask: Shared, rows: jax.Array, perm: tuple[int, ...], shape_a,
                       product: str = "matmul") -> tuple[Shared, Shared]:
        """For x ∘ Y with Y under a fixed shared mask B (`mask`, drawn by `random_shared`;
        a party process names it to the dealer by its row descriptors `rows` and the
        layout `perm`): a fresh shared A and shares of C = A ∘ B. Correction: 8·|C| bytes."""
        fn = PRODUCTS[product]
        shape_c = tuple(jax.eval_shape(fn, jax.ShapeDtypeStruct(shape_a, DTYPE),
                                       jax.ShapeDtypeStruct(mask.shape, DTYPE)).shape)
        req = Request("operand_triple", (tuple(shape_a), shape_c, tuple(mask.shape)), (product, *perm))
        # The dealer's own B (it drew it): the simulation holds both shares.
        value = mask.share(CLIENT) + mask.share(SERVER) if len(self.parties) == 2 else None
        outs, _ = self.material(req, extra=value, handles=[rows])
        return self._shared(outs, 0), self._shared(outs, 1)

    def index_ot(self, rows: int, width: int) -> dict:
        """Random 1-out-of-`width` OT per row: the server gets pads R (rows, width); the
        client gets a uniform index t (rows,) and R[t] (correction: 8 bytes per row).
        Indices are reduced from 64-bit words (bias < width / 2^64).
        Returns {party: outputs}: client (t, R[t]), server (R,)."""
        outs, _ = self.material(Request("index_ot", ((rows, width),)))
        return outs

    def trunc_pair(self, shape, frac_bits: int) -> tuple[Shared, Shared, Shared]:
        """(r, r >> f, msb(r)) for truncation by f bits. Corrections: 16·|shape| bytes."""
        outs, _ = self.material(Request("trunc_pair", (tuple(shape),), (frac_bits,)))
        return self._shared(outs, 0), self._shared(outs, 1), self._shared(outs, 2)

    def trunc_products(self, stack_shape, frac_bits: int, partners: Sequence[int] = (),
                       pairs: Sequence[tuple[int, int]] = (), selects: Sequence[int] = (),
                       partner_shape=None):
        """Material for truncating a stack (S, ...) by f bits fused with products of the
        results (`mpc.protocols.linear.truncate_products`): per entry (r, h = r >> f,
        m = msb(r)); per partner k (a product of entry partners[k] with a value opened
        against a fresh mask b_k) [b_k], [h·b_k], [m·b_k]; per pair (i, j) [h_i·h_j],
        [h_i·m_j], [m_i·h_j], [m_i·m_j] ([h_i²], [h_i·m_i] for a square); per selection of
        entry selects[k] by a shared bit, a random bit t_k (XOR and arithmetic shares),
        [t_k·h], [t_k·m]. Corrections: 8·n bytes per piece for n elements per entry:
        2·S·n + 2·P·n' + Σ_pairs (2 or 4)·n + 3·B·n, n' the elements of `partner_shape`
        (default: an entry's shape, which must broadcast to it).
        Returns ((r, h, m) stacked, (b, h·b, m·b) stacked over partners or None, a tuple
        of pieces per pair, (t XOR, [t], [t·h], [t·m]) stacked over selections or None)."""
        pairs = tuple((int(i), int(j)) for i, j in pairs)
        args = (frac_bits, len(partners), *map(int, partners), len(pairs), *(v for ij in pairs for v in ij),
                len(selects), *map(int, selects))
        shapes = (tuple(stack_shape),) if partner_shape is None else (tuple(stack_shape), tuple(partner_shape))
        outs, _ = self.material(Request("trunc_products", shapes, args))
        first = outs[self.parties[0]]

        def shared(get):
            return local(self.parties, lambda p: get(outs[p]))

        trunc = tuple(shared(lambda o, i=i: o[i]) for i in range(3))
        partner = None if not partners else tuple(shared(lambda o, i=i: o[3][i]) for i in range(3))
        pieces = [tuple(shared(lambda o, k=k, c=c: o[4][k][c]) for c in range(len(first[4][k])))
                  for k in range(len(pairs))]
        sel = None if not selects else (local_xor(self.parties, lambda p: outs[p][5][0]),
                                        *(shared(lambda o, i=i: o[5][i]) for i in range(1, 4)))
        return trunc, partner, pieces, sel

    def random_shared(self, shape) -> tuple[Shared, jax.Array]:
        """A uniform ring element, shared; neither party learns it. No bytes.
        Returns (the sharing, its request number: names the mask to the dealer)."""
        outs, nonce = self.material(Request("random_shared", (tuple(shape),)))
        return self._shared(outs, 0), nonce

    # --- boolean correlations ----------------------------------------------------------------
    def and_triple(self, shape) -> tuple[XorShared, XorShared, XorShared]:
        """Bitwise AND triple on uint64 words (a, b, c = a & b). Correction: 8·|shape| bytes."""
        outs, _ = self.material(Request("and_triple", (tuple(shape),)))
        return self._xor(outs, 0), self._xor(outs, 1), self._xor(outs, 2)

    def bit_pair(self, shape) -> tuple[XorShared, Shared]:
        """A random bit r as XOR shares (in bit 0) and as arithmetic shares. Correction: 8·|shape|."""
        outs, _ = self.material(Request("bit_pair", (tuple(shape),)))
        return self._xor(outs, 0), self._shared(outs, 1)

    def bit_select_quad(self, shape) -> tuple[XorShared, Shared, Shared, Shared]:
        """(r as XOR bit, [r], [a], [r·a]) for the fused bit-times-value step of `select`.
        Corrections: 16·|shape| bytes ([r] and [r·a])."""
        outs, _ = self.material(Request("bit_select", (tuple(shape),)))
        return self._xor(outs, 0), self._shared(outs, 1), self._shared(outs, 2), self._shared(outs, 3)

    # --- function secret sharing ----------------------------------------------------------------
    def msb_keys(self, shape, bits: int, out_bits: int = 1) -> tuple[Shared, dict]:
        """Material for the sign of `bits`-bit values of `shape` from one opening
        (`mpc.protocols.fss.msb_dcf`): a mask r uniform mod 2^bits, additively shared
        (each party's share is its own words; reduce sums mod 2^bits), and each present
        party's DCF key (`mpc.dcf.msb_keygen`, output in Z_{2^out_bits}) over the
        flattened elements. Correction: 8·|shape|·`dcf.correction_words(bits − 1,
        out_bits)` bytes to EACH party (the common correction words).
        Returns (r shared, {party: its `mpc.dcf.DcfKey`})."""
        if not 2 <= bits <= 64 or not 1 <= out_bits <= 64:
            raise ValueError(f"msb_keys: bits must be in [2, 64] and out_bits in [1, 64], got {bits}, {out_bits}")
        outs, _ = self.material(Request("dcf_msb", (tuple(shape),), (int(bits), int(out_bits))))
        return self._shared(outs, 0), {p: outs[p][1] for p in self.parties}

    # --- randomness that is not the dealer's -------------------------------------------------
    def pairwise_mask(self, shape) -> jax.Array:
        """Words both parties derive from their shared key k_01 (input sharing). No bytes."""
        n = _n(shape)
        words, _ = self._drawn(lambda: self._draw({CLIENT: n, SERVER: n}, lambda p: self.keys["pairwise"]))
        return words[self.parties[0]].reshape(shape)

    def own_random(self, shape) -> XorShared:
        """Words each party draws from its *own* key, as XOR shares of their XOR: uniform,
        known to neither party alone, nor to the dealer. No bytes."""
        n = _n(shape)
        words, _ = self._drawn(lambda: self._draw({CLIENT: n, SERVER: n}, lambda p: self.keys[("own", p)]))
        return local_xor(self.parties, lambda p: words[p].reshape(shape))

    def party_random(self, party: int, shape) -> jax.Array | None:
        """Party `party`'s own private random words (None at the other party)."""
        n = _n(shape)
        counts = {CLIENT: n if party == CLIENT else 0, SERVER: n if party == SERVER else 0}
        words, _ = self._drawn(lambda: self._draw(counts, lambda p: self.keys[("own", p)]))
        return words[party].reshape(shape) if party in self.parties else None


def session_keys(seed: bytes | None = None) -> dict:
    """All keys of a simulated session: fresh from os.urandom, or derived from `seed`."""
    k0, k1, k01, o0, o1 = derive_keys(5, seed)
    return {CLIENT: k0, SERVER: k1, "pairwise": k01, ("own", CLIENT): o0, ("own", SERVER): o1}


class PartyDealer(Dealer):
    """One party's dealer material in a party process: its own words from its keys, its
    corrections from the dealer (`fetch([(nonce, request, handles), ...]) -> [flat
    uint64 words, ...]`, blocking calls to the dealer process; the requests of one host
    step of a staged program (`mpc.stages`) come in one call, so a party process can
    pipeline them)."""

    def __init__(self, channel, party: int, keys: dict, fetch: Callable) -> None:
        self.parties = (party,)
        self._fetch = fetch
        super().__init__(channel, keys=keys)

    def restart(self, keys: dict, fetch: Callable) -> None:
        """The next session's keys and dealer link (see `mpc.restart_party_context`); request
        numbers start again at 0, as the dealer's do for a new session."""
        self.keys, self._fetch, self._next = keys, fetch, 0
        self.channel.dealer("keys", KEY_BYTES, KEY_BYTES)

    def _fetch_many(self, calls) -> list[np.ndarray]:
        """Host side of consecutive draws (`_Fetch`, with their handles): each one's words
        and request number, in program order, and the corrections of those this party
        receives, asked of the dealer together."""
        flats = [self._host_words(f.counts, f.key_of) for f, _ in calls]
        asks = [(i, (int(flats[i][-1]), f.req, [np.asarray(h) for h in handles]))
                for i, (f, handles) in enumerate(calls)
                if f.req is not None and self.parties[0] in KINDS[f.req.kind].receivers]
        if asks:
            for (i, _), corr in zip(asks, self._fetch([ask for _, ask in asks])):
                flats[i] = np.concatenate([flats[i][:-1], np.asarray(corr, np.uint64), flats[i][-1:]])
        return flats

    def _draw(self, counts, key_of, handles=(), req=None):
        (p,) = self.parties
        kind = KINDS[req.kind] if req is not None else None
        ncorr = correction_bytes(req) // 8 if kind is not None and p in kind.receivers else 0
        total = counts[p] + ncorr
        flat = io_callback(_Fetch(self, counts, key_of, req), jax.ShapeDtypeStruct((total + 1,), DTYPE), *handles,
                           ordered=True)
        self._pending_corr = flat[counts[p]:total]
        return {p: flat[:counts[p]]}, flat[total].astype(jnp.int64)

    def _corrections(self, req, words, extra, handles):
        shapes = _correction_shapes(req)
        return _split(self._pending_corr, shapes)


class _Fetch:
    """The host callback of one draw in a party process (`PartyDealer._draw`). `batch`:
    a staged program runs consecutive callbacks with the same `batch` as one call of it,
    `batch([(callback, args), ...]) -> [result, ...]` (`mpc.stages`)."""

    def __init__(self, dealer: PartyDealer, counts: dict, key_of: Callable, req: Request | None) -> None:
        self.dealer, self.counts, self.key_of, self.req = dealer, counts, key_of, req

    def __call__(self, *handles) -> np.ndarray:
        return self.batch([(self, handles)])[0]

    @property
    def batch(self) -> Callable:
        return self.dealer._fetch_many


def _correction_shapes(req: Request) -> list[tuple[int, ...]]:
    if req.kind == "weight_triple":
        return list(req.shapes[1::2])
    if req.kind == "operand_triple":
        return [req.shapes[1]]
    if req.kind == "matmul_triple":
        return [req.shapes[2]]
    if req.kind == "index_ot":
        return [(req.shapes[0][0],)]
    if req.kind in ("trunc_pair", "bit_select"):
        return [req.shapes[0]] * 2
    if req.kind == "trunc_products":
        stack, elem, n, partners, pairs, selects, pshape = _trunc_products_layout(req)
        return ([stack] * 2 + [(len(partners), *pshape)] * (2 if partners else 0)
                + [elem] * sum(_pair_pieces(i, j) for i, j in pairs) + [(len(selects), *elem)] * (3 if selects else 0))
    if req.kind == "dcf_msb":
        bits, out_bits = req.args
        return [(_n(req.shapes[0]), dcf.correction_words(bits - 1, out_bits))]
    return [req.shapes[0]]


class CorrectionMaker:
    """The dealer's side of a party process's request: the correction of request `nonce`
    from the two parties' dealer keys and the request's public description alone.

    Weight masks named by handles are rebuilt from the server's key once and kept (the
    dealer holds every weight's mask for the session, |W| words each); cached operands'
    masks are rebuilt from their row descriptors on every request. A correction with
    several receivers (a DCF's common correction words) is made once: the first party to
    ask computes it, the other gets the same words (thread-safe; the dealer process
    serves each party's link in its own thread).
    """

    def __init__(self, keys: dict, compiled: bool = True, programs: dict | None = None) -> None:
        """`compiled=False`: run each correction eagerly, op by op (`jax.disable_jit`) —
        cheaper than compiling a program per request signature where few repeat
        (in-process tests of small programs). `programs`:
        compiled corrections by request signature, shared by the sessions of a dealer
        process (they depend on the request's public description only), so a session
        compiles only the signatures no earlier one used."""
        self.keys = {CLIENT: keys[CLIENT], SERVER: keys[SERVER]}
        self.compiled = compiled
        self._weight_masks: dict[tuple, np.ndarray] = {}
        self._programs: dict[Request, Callable] = {} if programs is None else programs
        self._shared: dict[tuple[int, Request], concurrent.futures.Future] = {}  # made, not yet fetched twice
        self._lock = threading.Lock()

    def _words(self, party: int, nonce: int, n: int) -> np.ndarray:
        return request_words(self.keys[party], nonce, n)

    def _weight_mask(self, nonce: int, shape: tuple[int, ...], transposed: bool) -> np.ndarray:
        drawn = shape[::-1] if transposed else shape
        key = (nonce, drawn)
        if key not in self._weight_masks:
            self._weight_masks[key] = self._words(SERVER, nonce, _n(drawn)).reshape(drawn)
        m = self._weight_masks[key]
        return m.T if transposed else m

    def corrections(self, requests) -> list[np.ndarray]:
        """`correction` of each (nonce, request, handles): a `PartyDealer`'s `fetch`."""
        return [self.correction(nonce, req, handles) for nonce, req, handles in requests]

    def correction(self, nonce: int, req: Request, handles: Sequence[np.ndarray]) -> np.ndarray:
        kind = KINDS[req.kind]
        if kind.correct is None:
            raise ValueError(f"dealer: {req.kind} has no correction")
        if len(kind.receivers) == 1:
            return self._make(nonce, req, handles)
        with self._lock:  # the first receiver makes it, the second takes it
            made = self._shared.pop((nonce, req), None)
            first = made is None
            if first:
                made = self._shared[(nonce, req)] = concurrent.futures.Future()
        if first:
            try:
                made.set_result(self._make(nonce, req, handles))
            except BaseException as err:
                made.set_exception(err)
                raise
        return made.result()

    def _make(self, nonce: int, req: Request, handles: Sequence[np.ndarray]) -> np.ndarray:
        kind = KINDS[req.kind]
        n0, n1 = kind.words(req)
        w0, w1 = self._words(CLIENT, nonce, n0), self._words(SERVER, nonce, n1)
        extra = None
        if req.kind == "weight_triple":
            product, *transposed = req.args
            mask_shapes = req.shapes[2::2]
            if len(handles) != len(mask_shapes) or len(transposed) != len(mask_shapes):
                raise ValueError("dealer: weight_triple handles do not match its shapes")
            extra = ([self._weight_mask(int(np.asarray(h)), tuple(s), bool(t))
                      for h, s, t in zip(handles, mask_shapes, transposed)], None)
        elif req.kind == "operand_triple":
            perm = tuple(req.args[1:])
            shape = req.shapes[2]
            drawn = [0] * len(shape)
            for i, a in enumerate(perm):
                drawn[a] = shape[i]
            rows = np.asarray(handles[0], np.int64)
            row_axes = rows.ndim - 1
            mask = operand_mask(rows, tuple(drawn[row_axes:]),
                                lambda h, n: self._words(CLIENT, h, n) + self._words(SERVER, h, n))
            extra = mask.transpose(perm)
        if not self.compiled:  # op by op, loops in Python (a DCF's key generation is a jitted scan)
            with jax.disable_jit():
                corr = kind.correct(req, jnp.asarray(w0), jnp.asarray(w1), extra)
        else:
            if req not in self._programs:  # one compiled correction per request signature
                self._programs[req] = jax.jit(lambda a, b, e, req=req: kind.correct(req, a, b, e))
            corr = self._programs[req](w0, w1, extra)
        return np.concatenate([np.asarray(c, np.uint64).reshape(-1) for c in corr])
