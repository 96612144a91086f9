"""The shared-tensor type.

A `Shared` holds an additive 2-out-of-2 sharing of a tensor over Z_2^64:
x = x_0 + x_1 mod 2^64, where party 0 (the client) holds x_0 and party 1 (the server)
holds x_1. In simulation both shares live in one array with a leading party axis of size
2, so the whole protocol is one jit-compilable JAX program. Party-specific steps index
that axis through `share(p)` / `from_parties`; a per-process party view (TCP runs) keeps
the same interface with only its own share present.

Everything local lives here: addition, subtraction, negation, multiplication by public
*integers*, addition of public values (party 0 adds them), reshapes and indexing.
Anything that needs communication (products of two shared values, truncation,
comparisons) is a protocol in `mpc.protocols` and goes through the channel.

`frac` is the static fixed-point scale of the encoded value (number of fractional bits;
0 for integers and bits). Mixing scales in `+`/`-` raises at trace time instead of
silently producing garbage. A shared tensor has no truth value: `bool(x)` raises, so
no secret-dependent Python branch can slip in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mpc.ring import DTYPE

PARTIES = (0, 1)
CLIENT, SERVER = 0, 1


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Shared:
    """Additive shares of one tensor. `v[p]` is party p's share; `frac` its scale."""

    v: jax.Array  # (2, *shape) uint64
    frac: int = 0

    # --- pytree -----------------------------------------------------------------------
    def tree_flatten(self):
        return (self.v,), self.frac

    @classmethod
    def tree_unflatten(cls, frac, children):
        return cls(children[0], frac)

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_parties(cls, s0: jax.Array, s1: jax.Array, frac: int = 0) -> "Shared":
        return cls(jnp.stack([jnp.asarray(s0, DTYPE), jnp.asarray(s1, DTYPE)]), frac)

    @classmethod
    def public(cls, value: jax.Array, frac: int = 0) -> "Shared":
        """A trivial sharing of a public ring value (party 0 holds it, party 1 holds 0)."""
        value = jnp.asarray(value, DTYPE)
        return cls.from_parties(value, jnp.zeros_like(value), frac)

    def share(self, party: int) -> jax.Array:
        return self.v[party]

    # --- metadata ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.v.shape[1:])

    @property
    def ndim(self) -> int:
        return self.v.ndim - 1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __bool__(self):
        raise TypeError("a shared tensor has no truth value: secret-dependent branches are not allowed")

    def __repr__(self) -> str:  # never print share values
        return f"Shared(shape={self.shape}, frac={self.frac})"

    # --- local linear operations ------------------------------------------------------
    def _check_frac(self, other: "Shared") -> None:
        if self.frac != other.frac:
            raise ValueError(f"fixed-point scale mismatch: 2^{self.frac} vs 2^{other.frac}")

    def __add__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            return NotImplemented
        self._check_frac(other)
        return Shared(_expand(self.v, other.v, jnp.add), self.frac)

    def __sub__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            return NotImplemented
        self._check_frac(other)
        return Shared(_expand(self.v, other.v, jnp.subtract), self.frac)

    def __neg__(self) -> "Shared":
        return Shared(-self.v, self.frac)

    def add_public(self, value: jax.Array, party: int = CLIENT) -> "Shared":
        """x + c for a ring value c at this tensor's scale, held in the clear by `party`.

        With the default (party 0 adds it) this is the addition of a public constant; with
        party=SERVER it adds a value only the server knows (e.g. a bias), still local.
        """
        value = jnp.asarray(value, DTYPE)
        v = jnp.broadcast_to(self.v, (2, *jnp.broadcast_shapes(self.shape, value.shape)))
        return Shared(v.at[party].add(value), self.frac)

    def mul_public(self, c: Any, frac: int | None = None) -> "Shared":
        """x · c for public ring elements c (integers, or fixed-point values encoded at
        scale 2^k, in which case pass frac=self.frac + k: the caller truncates)."""
        c = jnp.asarray(c)
        if jnp.issubdtype(c.dtype, jnp.floating):
            raise TypeError("mul_public takes ring elements; encode reals first (mpc.protocols.linear.mul_const)")
        c = c.astype(DTYPE) if c.dtype == DTYPE else c.astype(jnp.int64).astype(DTYPE)
        return Shared(self.v * c[None], self.frac if frac is None else frac)

    def with_frac(self, frac: int) -> "Shared":
        """Reinterpret the scale (e.g. after an exact local shift); no arithmetic."""
        return Shared(self.v, frac)

    # --- shape operations (act on every party's share alike) --------------------------
    def reshape(self, *shape) -> "Shared":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Shared(self.v.reshape(2, *shape), self.frac)

    def transpose(self, *axes) -> "Shared":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        return Shared(self.v.transpose(0, *(a % self.ndim + 1 for a in axes)), self.frac)

    def swapaxes(self, a: int, b: int) -> "Shared":
        return Shared(jnp.swapaxes(self.v, a % self.ndim + 1, b % self.ndim + 1), self.frac)

    @property
    def T(self) -> "Shared":
        return self.transpose()

    def __getitem__(self, idx) -> "Shared":
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Shared(self.v[(slice(None), *idx)], self.frac)

    def sum(self, axis=None, keepdims: bool = False) -> "Shared":
        axes = tuple(range(1, self.v.ndim)) if axis is None else tuple(
            (a % self.ndim) + 1 for a in (axis if isinstance(axis, tuple) else (axis,)))
        return Shared(jnp.sum(self.v, axis=axes, keepdims=keepdims, dtype=DTYPE), self.frac)

    def cumsum(self, axis: int = -1) -> "Shared":
        return Shared(jnp.cumsum(self.v, axis=axis % self.ndim + 1, dtype=DTYPE), self.frac)

    def broadcast_to(self, shape) -> "Shared":
        return Shared(jnp.broadcast_to(self.v, (2, *shape)), self.frac)


def _expand(a: jax.Array, b: jax.Array, op) -> jax.Array:
    """Broadcast two (2, ...) share arrays against each other on their value axes."""
    shape = jnp.broadcast_shapes(a.shape[1:], b.shape[1:])
    return op(jnp.broadcast_to(a, (2, *shape)), jnp.broadcast_to(b, (2, *shape)))


def concatenate(xs: list[Shared], axis: int = 0) -> Shared:
    frac = xs[0].frac
    for x in xs[1:]:
        xs[0]._check_frac(x)
    nd = xs[0].ndim
    return Shared(jnp.concatenate([x.v for x in xs], axis=axis % nd + 1), frac)


def stack(xs: list[Shared], axis: int = 0) -> Shared:
    for x in xs[1:]:
        xs[0]._check_frac(x)
    nd = xs[0].ndim + 1
    return Shared(jnp.stack([x.v for x in xs], axis=axis % nd + 1), xs[0].frac)


def where_public(cond: jax.Array, x: Shared, y: Shared) -> Shared:
    """Select by a *public* condition (e.g. a causal mask); local."""
    x._check_frac(y)
    return Shared(jnp.where(cond[None], x.v, y.v), x.frac)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class XorShared:
    """Boolean (XOR) shares of uint64 words: x = x_0 ⊕ x_1, bitwise.

    Used inside comparisons, where each word carries the bits of one ring element. XOR,
    shifts, masks and XOR with public words are local; AND is a protocol
    (`mpc.protocols.compare.and_`).
    """

    v: jax.Array  # (2, *shape) uint64

    def tree_flatten(self):
        return (self.v,), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(children[0])

    @classmethod
    def from_parties(cls, s0: jax.Array, s1: jax.Array) -> "XorShared":
        return cls(jnp.stack([jnp.asarray(s0, DTYPE), jnp.asarray(s1, DTYPE)]))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.v.shape[1:])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __bool__(self):
        raise TypeError("a shared tensor has no truth value: secret-dependent branches are not allowed")

    def __repr__(self) -> str:
        return f"XorShared(shape={self.shape})"

    def __xor__(self, other: "XorShared") -> "XorShared":
        return XorShared(_expand(self.v, other.v, jnp.bitwise_xor))

    def xor_public(self, value) -> "XorShared":
        value = jnp.asarray(value, DTYPE)
        shape = jnp.broadcast_shapes(self.shape, value.shape)
        v = jnp.broadcast_to(self.v, (2, *shape))
        return XorShared(v.at[CLIENT].set(v[CLIENT] ^ value))

    def and_public(self, mask) -> "XorShared":
        return XorShared(self.v & jnp.asarray(mask, DTYPE)[None])

    def __invert__(self) -> "XorShared":
        return self.xor_public(jnp.asarray(np.uint64(2**64 - 1)))

    def __lshift__(self, s: int) -> "XorShared":
        return XorShared(self.v << np.uint64(s))

    def __rshift__(self, s: int) -> "XorShared":
        return XorShared(self.v >> np.uint64(s))

    def reshape(self, *shape) -> "XorShared":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return XorShared(self.v.reshape(2, *shape))
