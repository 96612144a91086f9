"""The dealer: correlated randomness for the online protocols.

Trust: a third party that colludes with neither client nor server (CrypTen's TTP, SPU's
beaver server, SIGMA's dealer). It learns nothing of the inputs: it never sees a share of
the client's or server's data, only randomness it made itself.

Seed compression: at start-up the dealer gives party p a 16-byte key k_p; every share
party p receives is the next words of AES-CTR(k_p), except the *corrections* — the one
share of a correlated value (c = a·b, r >> f, …) that cannot be random, which the dealer
computes and sends to party 1. Only those corrections (and the keys) count as dealer
bytes in the ledger. Each method's docstring states its correction bytes.

Inside `mpc.secure_jit` the words come from the host through an ordered `io_callback`
(one per request, in program order), so every call of a compiled program draws fresh
randomness and two requests never reuse a mask. Derived values (c = a·b etc.) are
computed in-graph with the exact ring kernels.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from mpc.channel import SimChannel
from mpc.prg import KEY_BYTES, AesCtrStream, derive_keys
from mpc.ring import DTYPE, msb, ring_matmul
from mpc.shares import Shared, XorShared

_ALL_ONES = np.uint64(2**64 - 1)


def _n(shape) -> int:
    return int(math.prod(shape))


class Dealer:
    """Correlated randomness from per-party AES-CTR streams."""

    def __init__(self, channel: SimChannel, seed: bytes | None = None) -> None:
        self.channel = channel
        k0, k1, k01 = derive_keys(3, seed)
        self._streams = [AesCtrStream(k0), AesCtrStream(k1)]
        # The client-server key for input sharing. In a real run the two parties agree on
        # it themselves (the dealer never holds it); here it lives beside the dealer's.
        self._pairwise = AesCtrStream(k01)
        # Each party's own private randomness (e.g. its share of a sampling draw). In a real
        # run each party keys it from its own os.urandom and nobody else holds the key;
        # here the two streams live beside the dealer's (keys 3 and 4 of the seed).
        self._own = [AesCtrStream(k) for k in derive_keys(5, seed)[3:]] if seed is not None else \
            [AesCtrStream(k) for k in derive_keys(2, None)]
        channel.dealer("keys", KEY_BYTES, KEY_BYTES)

    def pairwise_mask(self, shape) -> jax.Array:
        """Words both parties derive from their shared key (input sharing). No bytes."""
        n = _n(shape)
        flat = io_callback(lambda: self._pairwise.words(n), jax.ShapeDtypeStruct((n,), DTYPE), ordered=True)
        return flat.reshape(shape)

    def own_random(self, shape) -> XorShared:
        """Words each party draws from its *own* randomness, as XOR shares of their XOR:
        uniform, known to neither party alone (nor, in a real run, to the dealer). No bytes.
        """
        n = _n(shape)

        def host():
            return np.concatenate([self._own[0].words(n), self._own[1].words(n)])

        flat = io_callback(host, jax.ShapeDtypeStruct((2 * n,), DTYPE), ordered=True)
        return XorShared.from_parties(flat[:n].reshape(shape), flat[n:].reshape(shape))

    # --- raw words -----------------------------------------------------------------------
    def _draw(self, n0: int, n1: int) -> tuple[jax.Array, jax.Array]:
        """n0 fresh words of party 0's stream and n1 of party 1's (inside jit or eager)."""

        def host():
            return np.concatenate([self._streams[0].words(n0), self._streams[1].words(n1)])

        flat = io_callback(host, jax.ShapeDtypeStruct((n0 + n1,), DTYPE), ordered=True)
        return flat[:n0], flat[n0:]

    def _split(self, flat: jax.Array, shapes) -> list[jax.Array]:
        out, at = [], 0
        for s in shapes:
            out.append(flat[at:at + _n(s)].reshape(s))
            at += _n(s)
        return out

    def _share(self, op: str, values: list[jax.Array], frac: int = 0) -> list[Shared]:
        """Share dealer-known values: party 0's shares from its stream, party 1 gets corrections."""
        shapes = [v.shape for v in values]
        w0, _ = self._draw(sum(_n(s) for s in shapes), 0)
        s0 = self._split(w0, shapes)
        self.channel.dealer(op, 0, 8 * sum(_n(s) for s in shapes))
        return [Shared.from_parties(a, v - a, frac) for a, v in zip(s0, values)]

    def _random_shared(self, shapes) -> list[Shared]:
        """Uniform values whose both shares are free (drawn from both streams)."""
        n = sum(_n(s) for s in shapes)
        w0, w1 = self._draw(n, n)
        return [Shared.from_parties(a, b) for a, b in zip(self._split(w0, shapes), self._split(w1, shapes))]

    # --- arithmetic correlations -----------------------------------------------------------
    def triple(self, shape) -> tuple[Shared, Shared, Shared]:
        """Beaver triple (a, b, c = a·b), elementwise. Correction: 8·|shape| bytes."""
        a, b = self._random_shared([shape, shape])
        av, bv = a.v[0] + a.v[1], b.v[0] + b.v[1]
        (c,) = self._share("triple", [av * bv])
        return a, b, c

    def square_pair(self, shape) -> tuple[Shared, Shared]:
        """(a, a²). Correction: 8·|shape| bytes."""
        (a,) = self._random_shared([shape])
        av = a.v[0] + a.v[1]
        (c,) = self._share("square", [av * av])
        return a, c

    def matmul_triple(self, shape_a, shape_b) -> tuple[Shared, Shared, Shared]:
        """(A, B, C = A @ B) for shared × shared products. Correction: 8·|C| bytes."""
        a, b = self._random_shared([shape_a, shape_b])
        c = ring_matmul(a.v[0] + a.v[1], b.v[0] + b.v[1])
        (c,) = self._share("matmul_triple", [c])
        return a, b, c

    def weight_mask(self, shape) -> jax.Array:
        """Fixed mask B of a server weight, drawn from the server's stream: no bytes.

        The server opens F = W − B to the client once per session; the dealer keeps B to
        correlate the per-call triples (`weight_triple`).
        """
        _, b = self._draw(0, _n(shape))
        return b.reshape(shape)

    def weight_triple(self, masks: list[jax.Array], shape_a, product=ring_matmul) -> tuple[jax.Array, list[Shared]]:
        """For x ∘ W_j with the weights' fixed masks B_j (∘ = `product`, a matmul or an
        elementwise product): ONE client mask A for x and shares of every C_j = A ∘ B_j
        (the same masked input serves all weights that read x).

        A is party 0's alone (from its stream); party 1 receives the corrections of the
        C_j. Correction: 8·Σ|C_j| bytes.
        """
        a, _ = self._draw(_n(shape_a), 0)
        a = a.reshape(shape_a)
        cs = self._share("weight_triple", [product(a, m) for m in masks])
        return a, cs

    def operand_triple(self, mask: jax.Array, shape_a, product=ring_matmul) -> tuple[Shared, Shared]:
        """For x ∘ Y with Y under a fixed shared mask B (value `mask`, which the dealer
        drew and remembers): a fresh shared A and shares of C = A ∘ B.
        Correction: 8·|C| bytes."""
        (a,) = self._random_shared([shape_a])
        (c,) = self._share("operand_triple", [product(a.v[0] + a.v[1], mask)])
        return a, c

    def index_ot(self, rows: int, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Random 1-out-of-`width` OT per row: the server gets pads R (rows, width) from its
        stream; the client gets a uniform index t (rows,) from its stream and R[t]
        (correction: 8 bytes per row). Indices are reduced from 64-bit words (bias
        < width / 2^64)."""
        w0, w1 = self._draw(rows, rows * width)
        t = (w0 % np.uint64(width)).astype(jnp.int32)
        pads = w1.reshape(rows, width)
        self.channel.dealer("index_ot", 8 * rows, 0)
        return pads, t, jnp.take_along_axis(pads, t[:, None], axis=1)[:, 0]

    def party_random(self, party: int, shape) -> jax.Array:
        """A party's own private random words (its local PRG, expanded from its key)."""
        n = _n(shape)
        w0, w1 = self._draw(n if party == 0 else 0, n if party == 1 else 0)
        return (w0 if party == 0 else w1).reshape(shape)

    def trunc_pair(self, shape, frac_bits: int) -> tuple[Shared, Shared, Shared]:
        """(r, r >> f, msb(r)) for truncation by f bits. Corrections: 16·|shape| bytes."""
        (r,) = self._random_shared([shape])
        rv = r.v[0] + r.v[1]
        r_hi, r_msb = self._share("trunc_pair", [rv >> np.uint64(frac_bits), msb(rv)])
        return r, r_hi, r_msb

    def random_shared(self, shape) -> Shared:
        """A uniform ring element, shared; neither party learns it. No bytes."""
        (r,) = self._random_shared([shape])
        return r

    # --- boolean correlations ----------------------------------------------------------------
    def and_triple(self, shape) -> tuple[XorShared, XorShared, XorShared]:
        """Bitwise AND triple on uint64 words (a, b, c = a & b). Correction: 8·|shape| bytes."""
        n = _n(shape)
        w0, w1 = self._draw(3 * n, 2 * n)
        a0, b0, c0 = self._split(w0, [shape] * 3)
        a1, b1 = self._split(w1, [shape] * 2)
        c1 = ((a0 ^ a1) & (b0 ^ b1)) ^ c0
        self.channel.dealer("and_triple", 0, 8 * n)
        return XorShared.from_parties(a0, a1), XorShared.from_parties(b0, b1), XorShared.from_parties(c0, c1)

    def bit_pair(self, shape) -> tuple[XorShared, Shared]:
        """A random bit r as XOR shares (in bit 0) and as arithmetic shares. Correction: 8·|shape|."""
        n = _n(shape)
        w0, w1 = self._draw(n, n)
        r0, r1 = w0.reshape(shape) & np.uint64(1), w1.reshape(shape) & np.uint64(1)
        (r_arith,) = self._share("bit_pair", [r0 ^ r1])
        return XorShared.from_parties(r0, r1), r_arith

    def bit_select_quad(self, shape) -> tuple[XorShared, Shared, Shared, Shared]:
        """(r as XOR bit, [r], [a], [r·a]) for the fused bit-times-value step of `select`.

        Corrections: 16·|shape| bytes ([r] and [r·a]).
        """
        n = _n(shape)
        w0, w1 = self._draw(2 * n, 2 * n)
        r0, a0 = self._split(w0, [shape] * 2)
        r1, a1 = self._split(w1, [shape] * 2)
        r0, r1 = r0 & np.uint64(1), r1 & np.uint64(1)
        rv, av = r0 ^ r1, a0 + a1
        r_arith, ra = self._share("bit_select", [rv, rv * av])
        return XorShared.from_parties(r0, r1), r_arith, Shared.from_parties(a0, a1), ra
