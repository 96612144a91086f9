"""The numeric backend protocol the architectures are written against, and its plain form.

A transformer in `pspec_jax.models.arch` is written once, as pure functions of a params
pytree and an `ops` object. `PlainOps` (here) evaluates it on float32 JAX arrays; the
secure backend (`pspec_jax.secure`) evaluates the very same code on secret-shared
tensors. So the architecture code touches activations ONLY through:

* `ops.<method>(...)` — the methods of `Ops` below;
* `+` / `-` between activations (and unary `-`);
* `.reshape`, `.transpose`, `.swapaxes`, basic `[...]` indexing/slicing, `.shape`.

No `jnp.*` call on an activation and no `*` between activations or by constants (use
`ops.mul` / `ops.scale`): a shared tensor supports exactly the operations above. Public
tables (RoPE cos/sin, positions, masks) are plain arrays and may be built with jnp freely.
Weights (params pytree leaves) are the server's fixed operands: a backend decides how to
hold them (plain: float32 arrays; secure: shared or masked once per session).

The backend also owns the per-layer KV-cache representation (`new_layer_cache`,
`attention`), so a secure backend can keep masked copies of cached rows; the
`KVCache` pytree (cache.py) only carries the tuple of layer caches and the length.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp

F32 = jnp.float32


class Ops(Protocol):
    """The backend protocol. Shapes: B batch, T new tokens, S cache rows, H query heads,
    K key/value heads (H % K == 0), D head width, d model width, V vocabulary."""

    def embed(self, table: Any, token_ids: jax.Array) -> Any:
        """Rows of `table` (N, d) at integer `token_ids` (B, T) -> (B, T, d).
        Plain: a gather. Secure: one-hot(token_ids) @ table (ids may be secret)."""

    def linear(self, x: Any, w: Any, b: Any = None) -> Any:
        """x (..., in) @ w (in, out) [+ b (out,)] -> (..., out)."""

    def linear_many(self, x: Any, layers: list[tuple[Any, Any]]) -> list[Any]:
        """[linear(x, w, b) for (w, b) in layers]: several layers on the same input
        (q/k/v, gate/up). A secure backend masks x once and truncates all outputs in one
        exchange."""

    def layernorm(self, x: Any, scale: Any, bias: Any, eps: float) -> Any:
        """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased var);
        scale / bias None: skipped (folded into the next linear layer)."""

    def rmsnorm(self, x: Any, scale: Any, eps: float) -> Any:
        """x / sqrt(mean(x^2) + eps) * scale over the last axis (scale None: skipped)."""

    def gelu(self, x: Any) -> Any:
        """GPT-2's tanh GeLU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def silu(self, x: Any) -> Any:
        """x * sigmoid(x)."""

    def mul(self, a: Any, b: Any) -> Any:
        """Elementwise product of two activations (SwiGLU's gate * up)."""

    def scale(self, x: Any, c: float) -> Any:
        """x times a public constant."""

    def rope_many(self, xs: list[Any], cos: jax.Array, sin: jax.Array) -> list[Any]:
        """Rotary embedding, HF layout (rotate_half), of each x (B, T, h, D) in xs (queries
        and keys) with public cos/sin (T, D): x*cos + rotate_half(x)*sin with
        rotate_half(x) = [-x[D/2:], x[:D/2]]. A secure backend truncates all in one
        exchange."""

    def new_layer_cache(self, batch: int, max_len: int, n_kv_heads: int, head_dim: int) -> Any:
        """An empty cache for one layer holding up to `max_len` rows (a pytree)."""

    def attention(self, q: Any, k_new: Any, v_new: Any, layer_cache: Any,
                  start: jax.Array, mask: jax.Array | None = None) -> tuple[Any, Any]:
        """Causal (or tree) attention with the cache, one layer.

        Args:
          q: (B, T, H, D) queries of the T new tokens (RoPE already applied).
          k_new, v_new: (B, T, K, D) their keys (RoPE applied) and values.
          layer_cache: this layer's cache; rows [0, start) are valid context.
          start: int32 scalar, the cache length = absolute position of the first new token.
          mask: optional (T, S) bool public mask replacing the causal one (a token tree:
            `arch.tree_mask`); None = causal.
        Returns:
          (new_layer_cache, out): the cache with rows [start, start+T) set to the new
          keys/values, and out (B, T, H, D) = softmax(q kᵀ / sqrt(D) + causal mask) v,
          where query t sees rows j <= start + t (rows beyond, stale from a rollback or
          never written, are masked). Query head h uses kv head h // (H // K).
        """


class PlainOps:
    """The reference backend: float32 JAX arrays, jit-friendly, no state."""

    name = "plain"

    def embed(self, table, token_ids):
        return jnp.take(table, token_ids, axis=0)  # (B, T, d)

    def linear(self, x, w, b=None):
        y = jnp.einsum("...i,io->...o", x, w, preferred_element_type=F32)
        return y if b is None else y + b

    def linear_many(self, x, layers):
        return [self.linear(x, w, b) for w, b in layers]

    def layernorm(self, x, scale, bias, eps):
        mu = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
        y = (x - mu) * jax.lax.rsqrt(var + F32(eps))
        y = y if scale is None else y * scale  # None: folded into the next linear layer
        return y if bias is None else y + bias

    def rmsnorm(self, x, scale, eps):
        ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(ms + F32(eps))
        return y if scale is None else y * scale

    def gelu(self, x):
        c = F32(math.sqrt(2.0 / math.pi))
        return F32(0.5) * x * (F32(1.0) + jnp.tanh(c * (x + F32(0.044715) * x * x * x)))

    def silu(self, x):
        return x * jax.nn.sigmoid(x)

    def mul(self, a, b):
        return a * b

    def scale(self, x, c):
        return x * F32(c)

    def rope_many(self, xs, cos, sin):
        half = xs[0].shape[-1] // 2
        return [x * cos[:, None, :] + jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin[:, None, :]
                for x in xs]

    def new_layer_cache(self, batch, max_len, n_kv_heads, head_dim):
        z = jnp.zeros((batch, max_len, n_kv_heads, head_dim), F32)
        return {"k": z, "v": z}

    def attention_weights(self, scores, mask):
        """softmax over the last axis of the scaled scores where `mask` (public) holds."""
        return jax.nn.softmax(jnp.where(mask, scores, F32(-jnp.inf)), axis=-1)

    def attention(self, q, k_new, v_new, layer_cache, start, mask=None):
        B, T, H, D = q.shape
        K = k_new.shape[2]
        start = jnp.asarray(start, jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        k = jax.lax.dynamic_update_slice(layer_cache["k"], k_new.astype(F32), (zero, start, zero, zero))
        v = jax.lax.dynamic_update_slice(layer_cache["v"], v_new.astype(F32), (zero, start, zero, zero))
        S = k.shape[1]
        qg = q.reshape(B, T, K, H // K, D)  # head h = kv * G + g
        s = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=F32)
        s = s * F32(1.0 / math.sqrt(D))
        if mask is None:
            rows = jnp.arange(S, dtype=jnp.int32)  # (S,)
            qpos = start + jnp.arange(T, dtype=jnp.int32)  # (T,)
            mask = rows[None, :] <= qpos[:, None]  # (T, S)
        w = self.attention_weights(s, mask)
        out = jnp.einsum("bkgts,bskd->btkgd", w, v, preferred_element_type=F32)
        return {"k": k, "v": v}, out.reshape(B, T, H, D)

    def gather_cache_rows(self, layer_cache, index):
        """The layer cache with row r replaced by row index[r] (index (S,) int32)."""
        return {n: jnp.take(a, index, axis=1) for n, a in layer_cache.items()}


PLAIN = PlainOps()
