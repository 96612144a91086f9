"""The secure backend: the `Ops` protocol (pspec_jax.models.ops) over secret shares.

The architectures in `pspec_jax.models.arch` run unchanged on it: activations are
`mpc.Shared` tensors, the server's weights are `ServerWeight`s prepared once per session
(`prepare_params`), the KV cache holds shared keys and values. Every product is followed
by the truncation that keeps activations at the context's fixed-point scale.

Who holds what: token ids are the client's (shared as one-hot rows); weights, norm scales
and biases are the server's; positions, RoPE tables and the causal mask are public.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import mpc
from mpc.protocols import linear as L
from mpc.protocols import nonlinear as NL
from mpc.protocols import norm
from mpc.protocols.softmax import softmax
from mpc.shares import Shared, concatenate



def prepare_params(ctx: mpc.Context, params: Any) -> Any:
    """The server's session set-up: every weight matrix and norm scale becomes a
    `ServerWeight` (its masked value opened to the client once); biases become ring
    vectors the server adds locally. Runs eagerly, once per session.
    """
    fp = ctx.config.fixed

    def convert(path, leaf):
        name = str(getattr(path[-1], "key", getattr(path[-1], "idx", path[-1])))
        if name in ("b", "bias"):
            return fp.encode(np.asarray(leaf, np.float64))
        # Block weights at their own scale (MPCConfig.weight_frac_bits; truncated by it).
        # The embedding table stays at the activations' scale: its one-hot product is exact
        # and not truncated, and a tied LM head shares the table.
        in_block = str(getattr(path[0], "key", "")) == "layers"
        with ctx.ledger.scope("setup"):
            sw = L.setup_weight(ctx, np.asarray(leaf, np.float64), op=name,
                                frac=ctx.config.weight_frac_bits if in_block else None)
        if sw.w_small is not None and float(jnp.max(jnp.abs(sw.w_small))) < 2**24:
            # The server's fast operand holds small integers: float32 is exact below 2^24
            # and halves it (SmolLM2: -0.5 GB); the product promotes it to float64 per call.
            sw = dataclasses.replace(sw, w_small=sw.w_small.astype(jnp.float32))
        return sw

    return jax.tree_util.tree_map_with_path(convert, params)


# A weight above this many entries (SmolLM2's 49152 x 576 embedding and its tied LM
# head) is multiplied column block by column block in a loop: the exact ring product
# splits weight-sized operands into limbs, and over the whole matrix those temporaries
# took ~2 GB at once in the embedding's and the head's programs (XLA schedules the blocks
# of an unrolled split together; a loop bounds them to one block). Same protocol, same
# bytes and rounds, bit-identical products.
CHUNK_ENTRIES = 1 << 22


def _block_width(k: int, n: int, max_entries: int | None = None) -> int:
    """The widest divisor of n whose (k, width) block has at most max_entries entries
    (default CHUNK_ENTRIES; n itself when the whole matrix is that small)."""
    max_entries = CHUNK_ENTRIES if max_entries is None else max_entries
    if k * n <= max_entries:
        return n
    return max((d for d in range(1, n + 1) if n % d == 0 and k * d <= max_entries), default=n)


def blocked_ring_product(a: jax.Array, b: jax.Array, b_transposed: bool = False) -> jax.Array:
    """Exact a @ b mod 2^64 (a uint64 (..., m, k); b (k, n) uint64, or float holding small
    signed integers: the server's plain weight, `ring_matmul_small`), over column blocks of
    b in a `fori_loop` so that only one block's limbs are alive at a time.
    `b_transposed`: b is the transpose of a stored matrix (a tied LM head); its column
    blocks are then read as row blocks of that matrix — slicing b's columns would
    materialise all of the transpose first (113 MB for SmolLM2's head, every call)."""
    from mpc.ring import ring_matmul, ring_matmul_small

    prod = ring_matmul if b.dtype == jnp.uint64 else ring_matmul_small
    k, n = b.shape
    width = _block_width(k, n)
    if width == n:
        return prod(a, b)
    a = jnp.asarray(a, jnp.uint64)
    out = jnp.zeros((*a.shape[:-1], n), jnp.uint64)
    zeros = (0,) * (a.ndim - 1)

    # Outside the loop, where XLA cancels b.T against the transpose that made b.
    stored = b.T if b_transposed else b

    def body(i, out):
        col = i * width
        if b_transposed:  # the block as rows of the stored matrix (see the docstring)
            blk = jax.lax.dynamic_slice(stored, (col, 0), (width, k)).T
        else:
            blk = jax.lax.dynamic_slice(stored, (0, col), (k, width))
        return jax.lax.dynamic_update_slice(out, prod(a, blk), (*zeros, col))

    return jax.lax.fori_loop(0, n // width, body, out)


def _is_large(sw: L.ServerWeight) -> bool:
    return len(sw.shape) == 2 and _block_width(*sw.shape) != sw.shape[1]


def _weight_product(ctx: mpc.Context, x: Shared, sw: L.ServerWeight, op: str) -> Shared:
    """`L.matmul_weight` (x @ W, untruncated) for a large weight, through the blocked
    product. The server's operand is its small-integer float form when it has one (the
    product picks `ring_matmul_small` on a float block), so it keeps its fast path."""
    if not _is_large(sw):
        return L.matmul_weight(ctx, x, sw, op=op)
    if x.shape[-1] != sw.shape[0]:
        raise ValueError(f"matmul_weight: {x.shape} @ {sw.shape}")
    impl = functools.partial(blocked_ring_product, b_transposed=sw.transposed)
    return L.weight_products(ctx, x, [sw], "matmul", op, impl=impl)[0]


class SecureOps:
    """`Ops` over `mpc.Shared` activations. Holds the MPC context (not traced)."""

    name = "secure"

    def __init__(self, ctx: mpc.Context) -> None:
        self.ctx = ctx

    @property
    def frac(self) -> int:
        return self.ctx.config.frac_bits

    # --- linear layers ---------------------------------------------------------------
    def embed(self, table: L.ServerWeight, token_ids: jax.Array) -> Shared:
        """One-hot rows of the client's token ids (frac 0) @ the server's table: exact, no
        truncation. Cost: 8·T·V bytes from the client, 1 round."""
        ctx = self.ctx
        onehot = (token_ids[..., None] == jnp.arange(table.shape[0])[None]).astype(jnp.uint64)
        with ctx.ledger.scope("embed"):
            x = ctx.share_ring(onehot, owner=mpc.CLIENT, frac=0)
            return _weight_product(ctx, x, table, op="embed")

    def linear(self, x: Shared, w: L.ServerWeight, b=None) -> Shared:
        """x @ W + b truncated to the activations' scale (`L.linear`; a norm's output
        arrives above it); a large W through the blocked product."""
        if not _is_large(w):
            return L.linear(self.ctx, x, w, bias=b, out_frac=self.frac)
        raw = _weight_product(self.ctx, x, w, op="linear")
        y = L.truncate(self.ctx, raw, raw.frac - self.frac, op="linear/trunc")
        return y if b is None else y.add_public(b, party=mpc.SERVER)

    def linear_many(self, x: Shared, layers) -> list[Shared]:
        return L.linear_many(self.ctx, x, layers, out_frac=self.frac)

    def scale(self, x: Shared, c: float) -> Shared:
        return L.mul_const(self.ctx, x, c)

    def mul(self, a: Shared, b: Shared) -> Shared:
        return L.mul_fixed(self.ctx, a, b)

    def rope_many(self, xs: list[Shared], cos: jax.Array, sin: jax.Array) -> list[Shared]:
        """x·cos + rotate_half(x)·sin with public tables for each x (B, T, h_i, D):
        local products, then one truncation of all heads together (1 round)."""
        fp = self.ctx.config.fixed
        x = concatenate(xs, axis=2)  # heads side by side: the tables are per (T, D)
        half = x.shape[-1] // 2
        rot = concatenate([-x[..., half:], x[..., :half]], axis=-1)
        c, s = fp.encode(cos[:, None, :]), fp.encode(sin[:, None, :])  # (T, 1, D)
        y = L.truncate(self.ctx, x.mul_public(c, frac=2 * self.frac) + rot.mul_public(s, frac=2 * self.frac),
                       self.frac, op="rope")
        bounds = np.cumsum([0] + [xi.shape[2] for xi in xs])
        return [y[:, :, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    # --- nonlinear -------------------------------------------------------------------
    def layernorm(self, x, scale, bias, eps):
        return norm.layernorm(self.ctx, x, scale, bias, eps)

    def rmsnorm(self, x, scale, eps):
        return norm.rmsnorm(self.ctx, x, scale, eps)

    def gelu(self, x):
        return NL.gelu(self.ctx, x)

    def silu(self, x):
        return NL.silu(self.ctx, x)

    # --- attention with a shared KV cache ----------------------------------------------
    def new_layer_cache(self, batch, max_len, n_kv_heads, head_dim):
        """Keys and values as masked-once operands (`mpc.protocols.linear.MaskedShared`):
        each row's masked value is opened when it is appended and reused by every later
        step, so a step opens only its new rows and its queries."""
        shape = (batch, max_len, n_kv_heads, head_dim)
        parties = self.ctx.parties
        never_written = jnp.concatenate([jnp.full((batch, max_len, 1), -1, jnp.int64),
                                         jnp.zeros((batch, max_len, 1), jnp.int64)], axis=-1)
        empty = L.MaskedShared(Shared(jnp.zeros((len(parties), *shape), jnp.uint64), self.frac, parties),
                               jnp.zeros(shape, jnp.uint64), never_written)
        return {"k": empty, "v": empty}

    def attention(self, q: Shared, k_new: Shared, v_new: Shared, layer_cache, start, mask=None):
        """Causal attention over the shared cache (see `Ops.attention`); a public (T, S)
        `mask` (a token tree's) replaces the causal one at no cost in rounds or bytes.

        Rounds: QKᵀ (1, the new rows' masking riding with it), softmax (whose first exp
        round also truncates the scores), PV (1), truncate (1). Scores for all S cache rows are computed (static shapes); rows beyond
        a query's position are removed by the softmax's public causal mask.
        """
        ctx = self.ctx
        B, T, H, D = q.shape
        K = k_new.shape[2]
        G = H // K
        start = jnp.asarray(start, jnp.int32)
        zero = jnp.zeros((), jnp.int32)

        def write(cache: L.MaskedShared, new: L.MaskedShared) -> L.MaskedShared:
            mask = cache.mask.map(lambda v: jax.lax.dynamic_update_slice(v, new.mask.v, (zero, zero, start, zero, zero)))
            opened = jax.lax.dynamic_update_slice(cache.opened, new.opened, (zero, start, zero, zero))
            rows = jax.lax.dynamic_update_slice(cache.rows, new.rows, (zero, start, zero))
            return L.MaskedShared(mask, opened, rows)

        with ctx.ledger.scope("attention"):
            # the new rows' masking travels with QKᵀ's opening (one round for both): the
            # product's triple needs only the rows' masks, known before the round
            appending, (k_pre, _) = L.mask_once_rider(ctx, [k_new, v_new], row_axes=2)
            S = layer_cache["k"].shape[1]
            # queries grouped by kv head: (B, K, G·T, D); keys as (B, K, D, S); values (B, K, S, D)
            qg = q.reshape(B, T, K, G, D).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, D)
            raw = L.matmul_masked(ctx, qg, write(layer_cache["k"], k_pre).transpose(0, 2, 3, 1), op="qk",
                                  riders=[appending],
                                  completed=lambda: write(layer_cache["k"], appending.result[0]).transpose(0, 2, 3, 1))
            k, v = (write(layer_cache[n], rows) for n, rows in zip("kv", appending.result))  # (B, S, K, D)
            # 1/sqrt(D) as a public product; the scores stay untruncated (scale 3f): the
            # softmax's comparisons read them so and their truncation rides on exp's first square
            c = ctx.config.fixed.encode(1.0 / math.sqrt(D))
            scores = raw.mul_public(c, frac=raw.frac + self.frac)
            rows = jnp.arange(S, dtype=jnp.int32)
            if mask is None:
                qpos = start + jnp.tile(jnp.arange(T, dtype=jnp.int32), G)  # (G·T,)
                mask = rows[None, :] <= qpos[:, None]  # (G·T, S), public
            else:
                mask = jnp.tile(mask, (G, 1))  # row g·T + t is query t's mask, (G·T, S)
            probs = softmax(ctx, scores, mask=mask, x_trunc=scores.frac - self.frac)
            out = L.truncate(ctx, L.matmul_masked(ctx, probs, v.transpose(0, 2, 1, 3), op="pv"), self.frac,
                             op="pv/trunc")  # (B, K, G·T, D)
        out = out.reshape(B, K, G, T, D).transpose(0, 3, 1, 2, 4).reshape(B, T, H, D)
        return {"k": k, "v": v}, out

    def gather_cache_rows(self, layer_cache, index):
        """Row r of the layer cache replaced by row index[r] (public (S,) int32; a token
        tree's accepted path, `KVCache.keep_path`): local on each party's share, and each
        row's mask and opened value F = Y − B move together, so the moved row is still
        masked by the one mask it was opened under."""

        def gather(c: L.MaskedShared) -> L.MaskedShared:
            return L.MaskedShared(c.mask.map(lambda v: jnp.take(v, index, axis=2)),
                                  jnp.take(c.opened, index, axis=1), jnp.take(c.rows, index, axis=1), c.perm)

        return {n: gather(c) for n, c in layer_cache.items()}
