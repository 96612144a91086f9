"""The functional KV cache: a pytree of per-layer caches plus its own length.

Layout (plain backend): `layers[i] = {"k": (B, S, K, D), "v": (B, S, K, D)}` float32,
S = `max_len` fixed at creation so jitted decode steps keep one shape as the cache
fills; `length` is an int32 scalar (shared by the batch): rows [0, length) are the
context. Appending T tokens writes rows [length, length + T) and advances `length`
(done by the forward); rolling back just lowers `length` — stale rows beyond it are
masked by attention and overwritten by the next append. A secure backend stores its own
layer representation in `layers` (see `Ops.new_layer_cache`); the length logic is shared.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from pspec_jax.models.config import ModelConfig


@struct.dataclass
class KVCache:
    layers: tuple[Any, ...]
    length: jax.Array  # int32 scalar

    @property
    def max_len(self) -> int:
        leaf = jax.tree_util.tree_leaves(self.layers[0])[0]
        return int(leaf.shape[-3])

    def rollback(self, length: Any) -> "KVCache":
        """The cache truncated to `length` rows (any length <= the current one)."""
        return self.replace(length=jnp.asarray(length, jnp.int32))

    def keep_path(self, start: Any, src: jax.Array, n: Any, ops: Any = None) -> "KVCache":
        """The cache after a token-tree pass: rows [0, start) kept, then the `n` rows
        `src[:n]` (an accepted root-to-node path) moved to rows [start, start + n), and
        the length set to start + n.

        How: every row r of every layer is replaced by row index[r], where index is the
        identity except index[start + k] = src[k] for k < n (one gather per layer,
        `ops.gather_cache_rows`). A tree's node i sits at row (root row) + i and a node's
        index exceeds its depth, so src[k] >= start + k: each row moves down or stays,
        and the gather reads only the old rows, never one it already overwrote. Rows
        from start + n on are stale (masked, overwritten by the next append). The moved
        rows were computed at position start - 1 + depth with attention to their
        ancestors only, i.e. exactly as a chain over the path would have computed them.

        Args:
          start: int32 scalar, the first row to fill (the row after the tree's root).
          src: (M,) int32 source rows; entries from n on are ignored.
          n: int32 scalar in [0, M], rows to keep.
          ops: the backend owning the layer layout (default: plain).
        """
        if ops is None:
            from pspec_jax.models.ops import PLAIN as ops
        start = jnp.asarray(start, jnp.int32)
        S = self.max_len
        rows = jnp.arange(S, dtype=jnp.int32)
        k = rows - start  # (S,) offset into the path
        picked = jnp.take(src, jnp.clip(k, 0, src.shape[0] - 1)).astype(jnp.int32)
        index = jnp.where((k >= 0) & (k < n), picked, rows)  # (S,)
        layers = tuple(ops.gather_cache_rows(lc, index) for lc in self.layers)
        return KVCache(layers=layers, length=start + jnp.asarray(n, jnp.int32))

    def advance(self, n: Any) -> "KVCache":
        return self.replace(length=self.length + jnp.asarray(n, jnp.int32))


def init_cache(config: ModelConfig, batch: int = 1, max_len: int | None = None,
               ops: Any = None) -> KVCache:
    """An empty cache for `config` with room for `max_len` tokens (default: the context)."""
    if ops is None:
        from pspec_jax.models.ops import PLAIN as ops
    max_len = config.max_seq_len if max_len is None else int(max_len)
    layers = tuple(ops.new_layer_cache(batch, max_len, config.n_kv_heads, config.head_dim)
                   for _ in range(config.n_layers))
    return KVCache(layers=layers, length=jnp.zeros((), jnp.int32))
