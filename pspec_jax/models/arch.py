"""GPT-2 and LLaMA decoders, written ONCE as pure functions of (config, params, ops).

The same code runs on float32 arrays (`PlainOps`) and on secret shares (the secure
backend): see ops.py for the rules this file keeps on activations.

Params pytree (float32 leaves; a weight `w` is (in, out)):

    {"embed": (V, d),
     "pos_embed": (P, d),                          # gpt2 only
     "layers": [ {"attn_norm": {"scale": (d,), "bias": (d,)},   # bias: gpt2 only
                  "q": {"w": (d, H*D), "b": (H*D,)},             # b: when attention_bias
                  "k": {"w": (d, K*D), "b"}, "v": {"w": (d, K*D), "b"},
                  "o": {"w": (H*D, d), "b": (d,)},
                  "mlp_norm": {...},
                  # gpt2:  "fc": {"w": (d, F), "b"}, "proj": {"w": (F, d), "b"}
                  # llama: "gate": {"w": (d, F)}, "up": {"w": (d, F)}, "down": {"w": (F, d)}
                 }, ... n_layers ],
     "final_norm": {"scale": (d,), "bias": (d,)},
     "lm_head": {"w": (d, V)}}                      # only when not tied

`layers` may be a list or an int-keyed dict (what nnx state gives); only `[i]` is used.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pspec_jax.models.cache import KVCache, init_cache
from pspec_jax.models.config import ModelConfig
from pspec_jax.models.ops import PLAIN

F32 = jnp.float32
Params = dict[str, Any]


# ----------------------------------------------------------------- public tables
def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape (T, head_dim) for integer `positions` (T,), HF layout."""
    inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=F32) / F32(head_dim)))  # (D/2,)
    ang = positions.astype(F32)[:, None] * inv[None, :].astype(F32)  # (T, D/2)
    ang = jnp.concatenate([ang, ang], axis=-1)  # (T, D)
    return jnp.cos(ang).astype(F32), jnp.sin(ang).astype(F32)


# ----------------------------------------------------------------- blocks
def apply_norm(config: ModelConfig, p: Params, x: Any, ops: Any) -> Any:
    if config.family == "gpt2":
        return ops.layernorm(x, p["scale"], p["bias"], config.norm_eps)
    return ops.rmsnorm(x, p["scale"], config.norm_eps)




def _lin(ops: Any, x: Any, p: Params) -> Any:
    return ops.linear(x, p["w"], p.get("b"))


def tree_layout(parents: tuple[int, ...], n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(depths (M,) int32, ancestors (M, M) bool) of a token tree's M = len(parents) + 1
    slots, public: slot 0 is the root, slot i's parent is parents[i − 1] (< i); only slots
    1..n_nodes are drafted, later ones are padding at the root's position that see
    themselves only (both parties derive this from the public shape and node count)."""
    M = len(parents) + 1
    depths, ancestors = np.zeros(M, np.int32), np.eye(M, dtype=bool)
    for i in range(1, n_nodes + 1):
        if not 0 <= parents[i - 1] < i:
            raise ValueError(f"tree_layout: slot {i}'s parent {parents[i - 1]} must precede it")
        depths[i] = depths[parents[i - 1]] + 1
        ancestors[i] |= ancestors[parents[i - 1]]
    return depths, ancestors


def tree_mask(start: jax.Array, ancestors: jax.Array, rows: int) -> jax.Array:
    """The public attention mask of T tree nodes whose tree occupies cache rows
    [start, start + M) (node j at row start + j).

    Query t sees every context row below `start` and the rows j with ancestors[t, j]
    (itself and its ancestors); nothing else: no other branch, no stale row beyond. A
    chain is the tree whose `ancestors` is lower-triangular: that gives back the causal
    mask. The private model's pass feeds all M nodes at once (T = M); a drafter feeding
    one node at a time passes that node's row of `ancestors` (T = 1).

    Args:
      start: int32 scalar, the cache row of tree node 0 (the root).
      ancestors: (T, M) bool, [t, j] = query t may see node j.
      rows: S, the cache's row count.
    Returns:
      (T, S) bool.
    """
    M = ancestors.shape[1]
    r = jnp.arange(rows, dtype=jnp.int32) - start  # (S,) row offset from the root
    inside = (r >= 0) & (r < M)
    anc = jnp.take(ancestors, jnp.clip(r, 0, M - 1), axis=1)  # (T, S)
    return (r < 0)[None, :] | (inside[None, :] & anc)


def attention_block(config: ModelConfig, p: Params, h: Any, layer_cache: Any,
                    start: jax.Array, rope: tuple[jax.Array, jax.Array] | None,
                    ops: Any, mask: jax.Array | None = None) -> tuple[Any, Any]:
    """Self-attention of one layer on the normed input h (B, T, d) -> (cache, (B, T, d));
    `mask` (T, S) replaces the causal mask when given (tree attention)."""
    B, T = h.shape[0], h.shape[1]
    H, K, D = config.n_heads, config.n_kv_heads, config.head_dim
    q, k, v = ops.linear_many(h, [(p[n]["w"], p[n].get("b")) for n in ("q", "k", "v")])
    q, k, v = q.reshape(B, T, H, D), k.reshape(B, T, K, D), v.reshape(B, T, K, D)
    if rope is not None:
        q, k = ops.rope_many([q, k], *rope)
    if mask is None:  # the chain path: exactly the call it always was
        layer_cache, a = ops.attention(q, k, v, layer_cache, start)  # a: (B, T, H, D)
    else:
        layer_cache, a = ops.attention(q, k, v, layer_cache, start, mask=mask)
    return layer_cache, _lin(ops, a.reshape(B, T, H * D), p["o"])


def mlp_block(config: ModelConfig, p: Params, h: Any, ops: Any) -> Any:
    """The MLP on the normed input h (B, T, d)."""
    if config.family == "gpt2":
        return _lin(ops, ops.gelu(_lin(ops, h, p["fc"])), p["proj"])
    gate, up = ops.linear_many(h, [(p[n]["w"], p[n].get("b")) for n in ("gate", "up")])
    return _lin(ops, ops.mul(ops.silu(gate), up), p["down"])


def block(config: ModelConfig, p: Params, x: Any, layer_cache: Any, start: jax.Array,
          rope: tuple[jax.Array, jax.Array] | None, ops: Any,
          mask: jax.Array | None = None) -> tuple[Any, Any]:
    """One pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(.))."""
    layer_cache, a = attention_block(config, p, apply_norm(config, p["attn_norm"], x, ops),
                                     layer_cache, start, rope, ops, mask)
    x = x + a
    x = x + mlp_block(config, p, apply_norm(config, p["mlp_norm"], x, ops), ops)
    return layer_cache, x


def embed_tokens(config: ModelConfig, params: Params, token_ids: jax.Array,
                 positions: jax.Array, ops: Any) -> Any:
    x = ops.embed(params["embed"], token_ids)  # (B, T, d)
    if config.family == "gpt2":
        B, T = token_ids.shape
        x = x + ops.embed(params["pos_embed"], jnp.broadcast_to(positions[None, :], (B, T)))
    return x


def head_weight(config: ModelConfig, params: Params) -> Any:
    """The LM head as (d, V): the embedding transposed when tied."""
    if config.tie_embeddings:
        return params["embed"].T
    return params["lm_head"]["w"]


def forward(config: ModelConfig, params: Params, token_ids: jax.Array,
            cache: KVCache | None = None, ops: Any = PLAIN,
            logits_index: jax.Array | None = None, *, positions: jax.Array | None = None,
            mask: jax.Array | None = None) -> tuple[Any, KVCache]:
    """Runs the decoder on T new tokens appended to `cache`.

    Args:
      config: the model's config (static under jit).
      params: the params pytree (see the module docstring).
      token_ids: (B, T) int token ids; their positions are cache.length + [0, T).
      cache: a `KVCache`; None means an empty one with room for exactly T tokens.
      ops: the numeric backend.
      logits_index: optional int32 scalar index into T: return the logits at that
        position only, (B, 1, V), instead of all T (saves the LM head on prefill).
      positions: optional (T,) int32 absolute positions of the new tokens (RoPE / learned
        positions) instead of cache.length + [0, T); a token tree passes
        cache.length + depth. The tokens are still written at rows cache.length + [0, T).
      mask: optional (T, S) bool public attention mask over the S cache rows (after the
        append) instead of the causal one; `tree_mask` builds it for a token tree.
        Both None (the default): the chain path, unchanged.
    Returns:
      (logits (B, T, V) float32, cache with length advanced by T).
    """
    B, T = token_ids.shape
    if cache is None:
        cache = init_cache(config, B, T, ops)
    start = cache.length
    if positions is None:
        positions = start + jnp.arange(T, dtype=jnp.int32)  # (T,) public
    rope = (rope_tables(positions, config.head_dim, config.rope_theta)
            if config.family == "llama" else None)
    x = embed_tokens(config, params, token_ids, positions, ops)
    layers = params["layers"]
    new_layers = []
    for i in range(config.n_layers):
        lc, x = block(config, layers[i], x, cache.layers[i], start, rope, ops, mask)
        new_layers.append(lc)
    x = apply_norm(config, params["final_norm"], x, ops)
    if logits_index is not None:
        x = x[:, logits_index][:, None]  # (B, 1, d)
    logits = ops.linear(x, head_weight(config, params))
    return logits, KVCache(layers=tuple(new_layers), length=start + jnp.int32(T))


# `forward` compiled once per (config, ops, shapes); params and cache are traced arguments.
forward_jit = jax.jit(forward, static_argnames=("config", "ops"))


# ----------------------------------------------------------------- params
def _normal_chunks(key: jax.Array, shapes: list[tuple[int, ...]], std: float) -> list[Any]:
    """Independent normal(0, std) float32 arrays of the given shapes from ONE draw (one
    small compile per total size instead of one per shape; eager callers get numpy
    slices, traced callers jnp slices)."""
    sizes = [int(np.prod(s)) for s in shapes]
    flat = jax.random.normal(key, (max(sum(sizes), 1),), F32) * F32(std)
    if not isinstance(flat, jax.core.Tracer):
        flat = np.asarray(flat)
    out, o = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(jnp.asarray(flat[o:o + n].reshape(shape), F32))
        o += n
    return out


def init_params(config: ModelConfig, key: jax.Array, std: float = 0.02) -> Params:
    """Random params (normal(0, std) weights, zero biases, unit norm scales)."""
    d, F, V = config.d_model, config.d_ff, config.vocab_size
    H, K, D = config.n_heads, config.n_kv_heads, config.head_dim
    shapes: list[tuple[int, ...]] = []

    def w(shape):  # placeholder index; filled from one draw below
        shapes.append(tuple(shape))
        return len(shapes) - 1

    def lin(i, o, bias):
        p = {"w": w((i, o))}
        if bias:
            p["b"] = jnp.zeros((o,), F32)
        return p

    def norm():
        p = {"scale": jnp.ones((d,), F32)}
        if config.family == "gpt2":
            p["bias"] = jnp.zeros((d,), F32)
        return p

    ab, mb = config.has_attn_bias, config.has_mlp_bias
    layers = []
    for _ in range(config.n_layers):
        lp = {"attn_norm": norm(), "q": lin(d, H * D, ab), "k": lin(d, K * D, ab),
              "v": lin(d, K * D, ab), "o": lin(H * D, d, ab), "mlp_norm": norm()}
        if config.family == "gpt2":
            lp.update(fc=lin(d, F, mb), proj=lin(F, d, mb))
        else:
            lp.update(gate=lin(d, F, mb), up=lin(d, F, mb), down=lin(F, d, mb))
        layers.append(lp)
    params: Params = {"embed": w((V, d)), "layers": layers, "final_norm": norm()}
    if config.family == "gpt2":
        params["pos_embed"] = w((config.max_seq_len, d))
    if not config.tie_embeddings:
        params["lm_head"] = {"w": w((d, V))}
    draws = _normal_chunks(key, shapes, std)
    return jax.tree_util.tree_map(lambda x: draws[x] if isinstance(x, int) else x, params)


def randomize_norms(params: Params, key: jax.Array, spread: float = 0.2) -> Params:
    """Params with norm scales/biases and linear biases perturbed (tests: no trivial 1s/0s)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)

    def picked(path):
        name = jax.tree_util.keystr(path[-1:])
        return name in ("['scale']", "['bias']", "['b']")

    shapes = [leaf.shape for path, leaf in leaves if picked(path)]
    noise = iter(_normal_chunks(key, shapes, spread))
    out = [(leaf + next(noise)).astype(F32) if picked(path) else leaf for path, leaf in leaves]
    return jax.tree_util.tree_unflatten(tree, out)


# The linear layers each per-layer norm feeds (the final norm feeds the head, which is the
# embedding when tied: not folded, the table is used for both).
_NORM_CONSUMERS = {"gpt2": {"attn_norm": ("q", "k", "v"), "mlp_norm": ("fc",)},
                   "llama": {"attn_norm": ("q", "k", "v"), "mlp_norm": ("gate", "up")}}


def fold_norm_scales(config: ModelConfig, params: Params) -> Params:
    """The same function with each block's norm scale γ (and bias β) folded into the
    linear layers it feeds: (x̂·γ + β) W + b = x̂ (diag(γ) W) + (β W + b). The folded
    norms have scale (and bias) None, which the backends skip. Under 2PC this removes
    the norm's product with the server's γ (2 rounds per norm, 4 per block) and one
    truncation error; the server does it once on its own weights. Computed in float64,
    stored as float32.
    """
    consumers = _NORM_CONSUMERS[config.family]
    layers = []
    for i in range(config.n_layers):
        layer = dict(params["layers"][i])
        for norm_name, linear_names in consumers.items():
            norm = layer[norm_name]
            g = np.asarray(norm["scale"], np.float64)
            beta = None if norm.get("bias") is None else np.asarray(norm["bias"], np.float64)
            for name in linear_names:
                w, b = np.asarray(layer[name]["w"], np.float64), layer[name].get("b")
                layer[name] = {"w": jnp.asarray(g[:, None] * w, F32)}
                if beta is not None:
                    b = beta @ w + (0.0 if b is None else np.asarray(b, np.float64))
                if b is not None:
                    layer[name]["b"] = jnp.asarray(b, F32)
            layer[norm_name] = {"scale": None, "bias": None} if "bias" in norm else {"scale": None}
        layers.append(layer)
    return {**params, "layers": layers}


def truncate_params(config: ModelConfig, params: Params, num_layers: int) -> tuple[ModelConfig, Params]:
    """The first `num_layers` blocks + final norm + head of the same network (no copy)."""
    if not 1 <= num_layers <= config.n_layers:
        from pspec_jax.errors import UserError
        raise UserError(f"drafter layers must be in [1, {config.n_layers}], got {num_layers}")
    return keep_blocks(config, params, range(num_layers))


def keep_blocks(config: ModelConfig, params: Params, blocks) -> tuple[ModelConfig, Params]:
    """The network made of the blocks `blocks` (increasing indices) + final norm + head of
    the same network (no copy): a layer-skipping drafter."""
    p = dict(params)
    p["layers"] = [params["layers"][i] for i in blocks]
    return config.replace(n_layers=len(p["layers"])), p


def param_count(params: Params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
