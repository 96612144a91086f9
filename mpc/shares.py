"""The shared-tensor type.

A `Shared` holds an additive 2-out-of-2 sharing of a tensor over Z_2^64:
x = x_0 + x_1 mod 2^64, where party 0 (the client) holds x_0 and party 1 (the server)
holds x_1. A shared tensor holds the shares of the parties *present* (`parties`, static):
in simulation both, stacked on a leading party axis of size 2, so the whole protocol is
one jit-compilable JAX program; in a party process only its own (axis of size 1), so
reading the peer's share is impossible by construction (`share(peer)` raises
`PeerShareError`). Protocols are written once for both: local steps act on every present
share alike, party-specific steps build a tensor share by share with `local(parties, fn)`
(fn(p) is party p's program for its own share), and only the channel combines shares.

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


class PeerShareError(LookupError):
    """A party's program asked for a share it does not hold (the peer's)."""


def _check_parties(v, parties: tuple[int, ...]) -> None:
    if not parties or any(p not in PARTIES for p in parties) or len(set(parties)) != len(parties):
        raise ValueError(f"parties must be a non-empty subset of {PARTIES}, got {parties}")
    shape = getattr(v, "shape", None)
    if shape is not None and (len(shape) == 0 or shape[0] != len(parties)):
        raise ValueError(f"share array {tuple(shape)} does not lead with one share per party {parties}")


def local(parties: tuple[int, ...], fn, frac: int = 0) -> "Shared":
    """The shared tensor whose party-p share is `fn(p)`, for the parties present: each
    party runs only its own branch (`p` is a static Python int)."""
    return Shared(jnp.stack([jnp.asarray(fn(p), DTYPE) for p in parties]), frac, parties)


def local_xor(parties: tuple[int, ...], fn) -> "XorShared":
    """`local` for XOR shares."""
    return XorShared(jnp.stack([jnp.asarray(fn(p), DTYPE) for p in parties]), parties)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Shared:
    """Additive shares of one tensor: `share(p)` is party p's; `frac` the scale."""

    v: jax.Array  # (len(parties), *shape) uint64: one share per party present
    frac: int = 0
    parties: tuple[int, ...] = PARTIES

    def __post_init__(self):
        _check_parties(self.v, self.parties)

    # --- pytree -----------------------------------------------------------------------
    def tree_flatten(self):
        return (self.v,), (self.frac, self.parties)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)  # skip validation: jax unflattens with placeholders
        object.__setattr__(obj, "v", children[0])
        object.__setattr__(obj, "frac", aux[0])
        object.__setattr__(obj, "parties", aux[1])
        return obj

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_parties(cls, s0: jax.Array, s1: jax.Array, frac: int = 0) -> "Shared":
        """Both parties' shares (simulation and tests)."""
        return cls(jnp.stack([jnp.asarray(s0, DTYPE), jnp.asarray(s1, DTYPE)]), frac)

    @classmethod
    def public(cls, value: jax.Array, frac: int = 0, parties: tuple[int, ...] = PARTIES) -> "Shared":
        """A trivial sharing of a public ring value (party 0 holds it, party 1 holds 0)."""
        value = jnp.asarray(value, DTYPE)
        return local(parties, lambda p: value if p == CLIENT else jnp.zeros_like(value), frac)

    def share(self, party: int) -> jax.Array:
        """Party `party`'s share; only a party's own share (or both, in simulation)."""
        if party not in self.parties:
            raise PeerShareError(f"party {party}'s share is not held here (parties {self.parties})")
        return self.v[self.parties.index(party)]

    def map(self, fn, frac: int | None = None) -> "Shared":
        """Apply a local function to the share array (leading axis: one share per party
        present, the same for every party)."""
        return Shared(fn(self.v), self.frac if frac is None else frac, self.parties)

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
        if self.parties != other.parties:
            raise ValueError(f"shares of different parties: {self.parties} vs {other.parties}")

    def __add__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            return NotImplemented
        self._check_frac(other)
        return Shared(_expand(self.v, other.v, jnp.add), self.frac, self.parties)

    def __sub__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            return NotImplemented
        self._check_frac(other)
        return Shared(_expand(self.v, other.v, jnp.subtract), self.frac, self.parties)

    def __neg__(self) -> "Shared":
        return self.map(jnp.negative)

    def add_public(self, value: jax.Array, party: int = CLIENT) -> "Shared":
        """x + c for a ring value c at this tensor's scale, held in the clear by `party`.

        With the default (party 0 adds it) this is the addition of a public constant; with
        party=SERVER it adds a value only the server knows (e.g. a bias), still local.
        """
        value = jnp.asarray(value, DTYPE)
        v = jnp.broadcast_to(self.v, (len(self.parties), *jnp.broadcast_shapes(self.shape, value.shape)))
        if party not in self.parties:  # the peer adds it
            return Shared(v, self.frac, self.parties)
        return Shared(v.at[self.parties.index(party)].add(value), self.frac, self.parties)

    def mul_public(self, c: Any, frac: int | None = None) -> "Shared":
        """x · c for public ring elements c (integers, or fixed-point values encoded at
        scale 2^k, in which case pass frac=self.frac + k: the caller truncates)."""
        c = jnp.asarray(c)
        if jnp.issubdtype(c.dtype, jnp.floating):
            raise TypeError("mul_public takes ring elements; encode reals first (mpc.protocols.linear.mul_const)")
        c = c.astype(DTYPE) if c.dtype == DTYPE else c.astype(jnp.int64).astype(DTYPE)
        return self.map(lambda v: v * c[None], frac)

    def with_frac(self, frac: int) -> "Shared":
        """Reinterpret the scale (e.g. after an exact local shift); no arithmetic."""
        return Shared(self.v, frac, self.parties)

    # --- shape operations (act on every party's share alike) --------------------------
    def reshape(self, *shape) -> "Shared":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.map(lambda v: v.reshape(len(self.parties), *shape))

    def transpose(self, *axes) -> "Shared":
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        return self.map(lambda v: v.transpose(0, *(a % self.ndim + 1 for a in axes)))

    def swapaxes(self, a: int, b: int) -> "Shared":
        return self.map(lambda v: jnp.swapaxes(v, a % self.ndim + 1, b % self.ndim + 1))

    @property
    def T(self) -> "Shared":
        return self.transpose()

    def __getitem__(self, idx) -> "Shared":
        idx = idx if isinstance(idx, tuple) else (idx,)
        return self.map(lambda v: v[(slice(None), *idx)])

    def sum(self, axis=None, keepdims: bool = False) -> "Shared":
        axes = tuple(range(1, self.v.ndim)) if axis is None else tuple(
            (a % self.ndim) + 1 for a in (axis if isinstance(axis, tuple) else (axis,)))
        return self.map(lambda v: jnp.sum(v, axis=axes, keepdims=keepdims, dtype=DTYPE))

    def cumsum(self, axis: int = -1) -> "Shared":
        return self.map(lambda v: jnp.cumsum(v, axis=axis % self.ndim + 1, dtype=DTYPE))

    def broadcast_to(self, shape) -> "Shared":
        """Broadcast to `shape` (numpy rules, leading axes added)."""
        shape = tuple(shape)
        n = len(self.parties)
        return self.map(lambda v: jnp.broadcast_to(v.reshape((n,) + (1,) * (len(shape) - self.ndim) + self.shape),
                                                   (n, *shape)))


def _expand(a: jax.Array, b: jax.Array, op) -> jax.Array:
    """Broadcast two (parties, ...) share arrays against each other on their value axes."""
    shape = jnp.broadcast_shapes(a.shape[1:], b.shape[1:])
    return op(jnp.broadcast_to(a, (a.shape[0], *shape)), jnp.broadcast_to(b, (b.shape[0], *shape)))


def concatenate(xs: list[Shared], axis: int = 0) -> Shared:
    for x in xs[1:]:
        xs[0]._check_frac(x)
    nd = xs[0].ndim
    return Shared(jnp.concatenate([x.v for x in xs], axis=axis % nd + 1), xs[0].frac, xs[0].parties)


def stack(xs: list[Shared], axis: int = 0) -> Shared:
    for x in xs[1:]:
        xs[0]._check_frac(x)
    nd = xs[0].ndim + 1
    return Shared(jnp.stack([x.v for x in xs], axis=axis % nd + 1), xs[0].frac, xs[0].parties)


def where_public(cond: jax.Array, x: Shared, y: Shared) -> Shared:
    """Select by a *public* condition (e.g. a causal mask); local."""
    x._check_frac(y)
    return Shared(jnp.where(cond[None], x.v, y.v), x.frac, x.parties)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class XorShared:
    """Boolean (XOR) shares of uint64 words: x = x_0 ⊕ x_1, bitwise.

    Used inside comparisons, where each word carries the bits of one ring element. XOR,
    shifts, masks and XOR with public words are local; AND is a protocol
    (`mpc.protocols.compare.and_`). Holds the shares of the parties present, like `Shared`.
    """

    v: jax.Array  # (len(parties), *shape) uint64
    parties: tuple[int, ...] = PARTIES

    def __post_init__(self):
        _check_parties(self.v, self.parties)

    def tree_flatten(self):
        return (self.v,), self.parties

    @classmethod
    def tree_unflatten(cls, parties, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "v", children[0])
        object.__setattr__(obj, "parties", parties)
        return obj

    @classmethod
    def from_parties(cls, s0: jax.Array, s1: jax.Array) -> "XorShared":
        """Both parties' shares (simulation and tests)."""
        return cls(jnp.stack([jnp.asarray(s0, DTYPE), jnp.asarray(s1, DTYPE)]))

    def share(self, party: int) -> jax.Array:
        if party not in self.parties:
            raise PeerShareError(f"party {party}'s share is not held here (parties {self.parties})")
        return self.v[self.parties.index(party)]

    def map(self, fn) -> "XorShared":
        """Apply a local function to the share array (leading axis: the parties present)."""
        return XorShared(fn(self.v), self.parties)

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
        if self.parties != other.parties:
            raise ValueError(f"shares of different parties: {self.parties} vs {other.parties}")
        return XorShared(_expand(self.v, other.v, jnp.bitwise_xor), self.parties)

    def xor_public(self, value) -> "XorShared":
        value = jnp.asarray(value, DTYPE)
        shape = jnp.broadcast_shapes(self.shape, value.shape)
        v = jnp.broadcast_to(self.v, (len(self.parties), *shape))
        if CLIENT not in self.parties:
            return XorShared(v, self.parties)
        i = self.parties.index(CLIENT)
        return XorShared(v.at[i].set(v[i] ^ value), self.parties)

    def and_public(self, mask) -> "XorShared":
        return self.map(lambda v: v & jnp.asarray(mask, DTYPE)[None])

    def __invert__(self) -> "XorShared":
        return self.xor_public(jnp.asarray(np.uint64(2**64 - 1)))

    def __lshift__(self, s: int) -> "XorShared":
        return self.map(lambda v: v << np.uint64(s))

    def __rshift__(self, s: int) -> "XorShared":
        return self.map(lambda v: v >> np.uint64(s))

    def __getitem__(self, idx) -> "XorShared":
        idx = idx if isinstance(idx, tuple) else (idx,)
        return self.map(lambda v: v[(slice(None), *idx)])

    def reshape(self, *shape) -> "XorShared":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self.map(lambda v: v.reshape(len(self.parties), *shape))

    def broadcast_to(self, shape) -> "XorShared":
        shape = tuple(shape)
        n = len(self.parties)
        return self.map(lambda v: jnp.broadcast_to(v.reshape((n,) + (1,) * (len(shape) - len(self.shape)) + self.shape),
                                                   (n, *shape)))


def stack_xor(xs: list[XorShared], axis: int = 0) -> XorShared:
    nd = len(xs[0].shape) + 1
    return XorShared(jnp.stack([x.v for x in xs], axis=axis % nd + 1), xs[0].parties)


def concatenate_xor(xs: list[XorShared], axis: int = 0) -> XorShared:
    nd = len(xs[0].shape)
    return XorShared(jnp.concatenate([x.v for x in xs], axis=axis % nd + 1), xs[0].parties)
