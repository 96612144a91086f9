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
