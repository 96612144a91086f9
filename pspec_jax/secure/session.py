"""A secure inference session: the private model's forward under 2PC.

`SecureSession` holds what one client-server session shares: the MPC context (ledger,
dealer, channel), the server's weights prepared once (masked values opened to the client
once), and the shared KV cache. `forward(token_ids)` runs the architecture of
`pspec_jax.models.arch` on the secure backend over T new tokens, appending them to the
cache, and returns shared logits; `rollback(length)` discards cache rows.

Compilation: one transformer block is compiled once (`mpc.secure_jit`) and called for
every layer with that layer's weights as arguments — the weights are never baked into
the program and a 30-layer model compiles as fast as a 1-layer one. Embedding and head
are two more small programs. Each distinct T compiles once.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import mpc
from mpc.approx import NonlinearConfig
from mpc.shares import Shared
from pspec_jax.errors import UserError
from pspec_jax.models import arch
from pspec_jax.models.cache import KVCache, init_cache
from pspec_jax.models.config import ModelConfig
from pspec_jax.secure.ops import SecureOps, prepare_params


# Residual streams of real LLMs carry massive activations (SmolLM2-135M: |x| up to 2.2e4
# on the first token, a row variance near 8e5), far above the generic norm range; the
# bound keeps Σx² at scale 2^(2f) inside the ring (< 2^62).
DEFAULT_MPC_CONFIG = mpc.MPCConfig(nonlinear=NonlinearConfig(norm_var_hi=1.5e6))


def pass_width(T: int, room: int) -> int:
    """The width a party process runs a pass over T tokens at (`pad_widths`): up to 16
    tokens as they are (decoding steps: T = 1 or γ + 1), longer passes (prefills) rounded
    up to a power of two, at most the cache's `room` — so a server compiles a few widths,
    not one per prompt length."""
    return T if T <= 16 else min(1 << (T - 1).bit_length(), room)


def _verify_program(ctx, logits, drafts, thresholds, q_rows, *, temperature: float, privacy: str):
    from mpc.protocols.rejection import greedy_verify, speculative_verify

    if temperature == 0.0:
        return greedy_verify(ctx, logits, drafts, op="rejection")
    return speculative_verify(ctx, logits, drafts, thresholds, q_rows, temperature, privacy, op="rejection")


def _tree_verify_program(ctx, logits, n_nodes, tokens, thresholds, q_try, *, parents: tuple[int, ...],
                         temperature: float, privacy: str):
    from mpc.protocols.rejection import tree_verify

    return tree_verify(ctx, logits, n_nodes, tokens, thresholds, q_try, parents=parents, temperature=temperature,
                       privacy=privacy, op="rejection")


def _next_token_program(ctx, logits, *, temperature: float):
    from mpc.protocols import sampling as S

    row = logits.reshape(1, logits.shape[-1])
    if temperature == 0.0:
        return S.open_index(ctx, S.argmax(ctx, row))
    return S.sample_logits(ctx, row, temperature=temperature)


verify_program = mpc.secure_jit(_verify_program)
tree_verify_program = mpc.secure_jit(_tree_verify_program)
next_token_program = mpc.secure_jit(_next_token_program)


class SecureSession:
    """The private model, its weights prepared for 2PC, and the shared KV cache."""

    def __init__(self, config: ModelConfig, params: Any, max_len: int | None = None,
                 mpc_config: mpc.MPCConfig | None = None, seed: bytes | None = None,
                 ctx: mpc.Context | None = None, tokenizer: Any = None, pad_widths: bool = False,
                 split: bool = False) -> None:
        """`params`: the private weights (the server; zeros of their shapes at a client
        process, which never holds them). `ctx`: a party process's context
        (`mpc.party_context`); by default a simulated session keyed from `seed`, whose
        config (`mpc_config`) is by default calibrated on `params`
        (`pspec_jax.secure.ranges`, with `tokenizer`'s calibration text). `pad_widths`:
        passes longer than 16 tokens (prefills) run at a bucketed width (`pass_width`), so
        a long-lived process compiles a bounded set of programs whatever the prompts.
        `split`: the simulated session runs offline and online programs (`mpc.Context`)."""
        from pspec_jax.secure.ranges import calibrated_config

        self.config = config
        self.ranges = None  # the calibration, when this session made it
        if ctx is None:
            if mpc_config is None:
                mpc_config, self.ranges = calibrated_config(config, params, tokenizer)
            ctx = mpc.Context(mpc_config, seed=seed, split=split)
        self.ctx = ctx
        self.ops = SecureOps(self.ctx)
        self.pad_widths = pad_widths
        self._begin(params, max_len)
        ops = self.ops

        def embed(ctx, params, token_ids, positions):
            return arch.embed_tokens(config, params, token_ids, positions, ops)

        def block(ctx, layer_params, x, layer_cache, start, rope, mask):
            return arch.block(config, layer_params, x, layer_cache, start, rope, ops, mask)

        def head(ctx, params, x):
            x = arch.apply_norm(config, params["final_norm"], x, ops)
            return ops.linear(x, arch.head_weight(config, params))

        self._embed, self._block, self._head = mpc.secure_jit(embed), mpc.secure_jit(block), mpc.secure_jit(head)

    def _begin(self, params: Any, max_len: int | None) -> None:
        t0 = time.perf_counter()
        # The server folds each block's norm scale into the linear layers after it (its own
        # weights, exact in float): 4 rounds per block fewer, one truncation less.
        self.params = prepare_params(self.ctx, arch.fold_norm_scales(self.config, params))
        self.setup_s = time.perf_counter() - t0
        self.max_len = self.config.max_seq_len if max_len is None else int(max_len)
        self.cache: KVCache = init_cache(self.config, 1, self.max_len, self.ops)
        self.compute_s = 0.0  # wall-clock seconds spent in secure forwards

    def restart(self, params: Any, max_len: int | None = None) -> None:
        """The next session on this one's compiled programs, once its party context has
        restarted (`mpc.restart_party_context`): the weights prepared under the new
        session's masks, an empty cache of `max_len` rows."""
        self._begin(params, max_len)

    def calibration(self) -> dict | None:
        """The model's measured ranges and the widths derived from them (None when the
        session was given its config)."""
        from pspec_jax.secure.ranges import describe

        return None if self.ranges is None else describe(self.ranges, self.ctx.config)

    @property
    def length(self) -> int:
        return int(self.cache.length)

    @property
    def ledger(self) -> mpc.Ledger:
        return self.ctx.ledger

    def forward(self, token_ids, logits_last_only: bool = False, with_logits: bool = True,
                tree=None) -> Shared | None:
        """Secure pass over T new tokens (the client's ids, (T,) or (1, T)) appended to the
        cache. Returns shared logits (1, T, V), or (1, 1, V) for the last token only, or
        None without the head (`with_logits=False`: a prefill that only fills the cache).
        `tree`: (parents, n_nodes), public — a token tree's pass over its T slots
        (`arch.tree_layout`): slot t at position length + its depth, attending to the cache
        and its ancestors only (`arch.tree_mask`); the rows stay until `keep_path`."""
        ids = jnp.asarray(token_ids, jnp.int32).reshape(1, -1)
        T = ids.shape[1]
        start = self.length
        if start + T > self.max_len:
            raise ValueError(f"secure pass would exceed the cache: {start} + {T} > {self.max_len}")
        t0 = time.perf_counter()
        # Trailing padding changes no real row (attention is causal); its cache rows lie
        # past the new length, where the next pass overwrites them. A tree pass keeps its
        # width (its sizes are already bucketed by the caller).
        W = pass_width(T, self.max_len - start) if self.pad_widths and tree is None else T
        if W > T:
            ids = jnp.pad(ids, ((0, 0), (0, W - T)))
        positions = start + jnp.arange(W, dtype=jnp.int32)
        mask = None
        if tree is not None:
            parents, n_nodes = tree
            if len(parents) != T - 1 or not 0 <= n_nodes < T:
                raise ValueError(f"a tree pass over {T} slots needs {T - 1} parents and at most {T - 1} nodes")
            depths, ancestors = arch.tree_layout(tuple(parents), int(n_nodes))
            positions = start + jnp.asarray(depths, jnp.int32)
            mask = arch.tree_mask(jnp.int32(start), jnp.asarray(ancestors, bool), self.max_len)
        rope = (arch.rope_tables(positions, self.config.head_dim, self.config.rope_theta)
                if self.config.family == "llama" else None)
        embed_params = {k: v for k, v in self.params.items() if k in ("embed", "pos_embed")}
        x = self._embed(self.ctx, embed_params, ids, positions)
        layers = []
        start_arr = jnp.asarray(start, jnp.int32)
        for i in range(self.config.n_layers):
            with self.ledger.scope(f"layer{i}"):
                lc, x = self._block(self.ctx, self.params["layers"][i], x, self.cache.layers[i], start_arr, rope,
                                    mask)
            layers.append(lc)
        logits = None
        if with_logits:
            if logits_last_only:
                x = x[:, T - 1:T]
            elif W > T:
                x = x[:, :T]
            head_params = {k: v for k, v in self.params.items() if k in ("embed", "final_norm", "lm_head")}
            with self.ledger.scope("head"):
                logits = self._head(self.ctx, head_params, x)
        jax.block_until_ready((x if logits is None else logits).v)
        self.compute_s += time.perf_counter() - t0
        self.cache = KVCache(layers=tuple(layers), length=jnp.asarray(start + T, jnp.int32))
        return logits

    def precompile(self, tokens, with_logits: bool = True, executor=None) -> None:
        """Compiles the programs of passes over each T in `tokens` without running them
        (embedding, block, head at the cache's shapes); with a `concurrent.futures`
        executor they compile in parallel. Call from the thread that runs the session."""
        cfg = self.config
        for T in tokens:
            ids = jnp.zeros((1, T), jnp.int32)
            positions = jnp.arange(T, dtype=jnp.int32)
            rope = arch.rope_tables(positions, cfg.head_dim, cfg.rope_theta) if cfg.family == "llama" else None
            embed_params = {k: v for k, v in self.params.items() if k in ("embed", "pos_embed")}
            x = self._embed.precompile(self.ctx, embed_params, ids, positions, executor=executor)
            _, x = self._block.precompile(self.ctx, self.params["layers"][0], x, self.cache.layers[0],
                                          jnp.asarray(0, jnp.int32), rope, None, executor=executor)
            if with_logits:
                head_params = {k: v for k, v in self.params.items() if k in ("embed", "final_norm", "lm_head")}
                self._head.precompile(self.ctx, head_params, x, executor=executor)

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"rollback to {length} outside [0, {self.length}]")
        self.cache = self.cache.rollback(length)

    def keep_path(self, start: int, path) -> None:
        """After a tree pass from cache row start − 1 (the root): keep the accepted path's
        rows (tree slots `path`, in order) at rows start, start + 1, … and set the length
        to start + len(path) (`KVCache.keep_path`; local, public indices)."""
        path = [int(i) for i in path]
        if not 1 <= start <= self.length or start + len(path) > self.length:
            raise ValueError(f"keep_path: {len(path)} rows from {start} outside the cache's {self.length}")
        src = np.asarray([start - 1 + i for i in path] or [start], np.int32)
        self.cache = self.cache.keep_path(start, jnp.asarray(src), len(path), ops=self.ops)

    def verify_tree(self, logits: Shared, n_nodes: int, tokens, thresholds, q_try, parents: tuple[int, ...],
                    temperature: float, privacy: str):
        """POST's private walk over the last (tree) pass's logits (1, M, V)
        (`mpc.protocols.rejection.tree_verify`): (the accepted path, as tree slots in
        order, known to both; the next token or — privacy "paper" — p at the path's last
        node, opened to the client). The client's inputs (tokens, thresholds, laws) are
        zeros of their shapes at the server; `parents` and `n_nodes` are public."""
        with self.ledger.scope("verify"):
            on_path, out = tree_verify_program(
                self.ctx, logits[0], jnp.asarray(n_nodes, jnp.int32), jnp.asarray(tokens, jnp.int32),
                jnp.asarray(thresholds), jnp.asarray(q_try), parents=tuple(int(p) for p in parents),
                temperature=float(temperature), privacy=privacy)
        return [i + 1 for i in np.flatnonzero(np.asarray(on_path))], out

    def verify(self, logits: Shared, drafts, thresholds, q_rows, temperature: float, privacy: str):
        """POST's private rejection of the drafts over the last pass's logits (1, γ+1, V):
        (n accepted, the next token or — privacy "paper" — row n of p), both opened to the
        client; n to the server too (`mpc.protocols.rejection`). The client's inputs
        (drafts, thresholds a_i, q rows) are zeros of their shapes at the server."""
        with self.ledger.scope("verify"):
            return verify_program(self.ctx, logits[0], jnp.asarray(drafts, jnp.int32), jnp.asarray(thresholds),
                                  jnp.asarray(q_rows), temperature=float(temperature), privacy=privacy)

    def next_token(self, logits: Shared, temperature: float, op: str = "next_token") -> int:
        """Standard secure decoding's next token from logits (1, 1, V): the secure argmax
        (temperature 0) or a secure sample of softmax(logits / T), opened to the client
        only (the server gets 0)."""
        with self.ledger.scope(op):
            idx = next_token_program(self.ctx, logits, temperature=float(temperature))
        token = int(np.asarray(idx).reshape(-1)[0])
        if not 0 <= token < logits.shape[-1]:  # only the client holds the opened index
            # the tree argmax's one-hot sum lands outside the vocabulary only when its
            # comparisons wrapped: a logit gap past the calibrated range (secure.ranges)
            raise UserError(f"the secure argmax opened index {token}, outside the vocabulary of "
                            f"{logits.shape[-1]}: a logit gap exceeded the calibrated range")
        return token

    def reveal_logits(self, logits: Shared) -> np.ndarray:
        """Open logits to both (tests and fidelity checks only; never in decoding)."""
        return np.asarray(self.ctx.reveal(logits, op="debug_reveal"))
