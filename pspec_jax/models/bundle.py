"""`ModelBundle`: a model's config, params and tokenizer together, and `load_model`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pspec_jax.errors import UserError
from pspec_jax.models import arch
from pspec_jax.models.config import ModelConfig, tiny_config


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """config + params (float32 jax arrays, arch.py layout) + tokenizer (HF fast, or None).

    Unpacks as `config, params, tokenizer = bundle`.
    """

    config: ModelConfig
    params: dict[str, Any] = dataclasses.field(repr=False)  # a private model's weights: never printed
    tokenizer: Any = dataclasses.field(default=None, repr=False)
    name: str = "model"

    def __iter__(self):
        return iter((self.config, self.params, self.tokenizer))

    def truncated(self, num_layers: int, name: str | None = None) -> "ModelBundle":
        """The first `num_layers` blocks + final norm + head (shares the arrays)."""
        cfg, p = arch.truncate_params(self.config, self.params, num_layers)
        return ModelBundle(cfg, p, self.tokenizer, name or f"{self.name}[:{num_layers}]")

    def module(self):
        """An nnx `Transformer` owning (copies of references to) these params."""
        from pspec_jax.models.modules import Transformer

        return Transformer(self.config, self.params)

    def forward(self, token_ids, cache=None):
        """Jitted plain forward: (B, T) ids -> (logits (B, T, V), cache)."""
        return arch.forward_jit(self.config, self.params, jnp.asarray(token_ids, jnp.int32), cache)

    def save(self, path: str | Path) -> Path:
        from pspec_jax.models.loaders import save_hf_folder

        return save_hf_folder(path, self.config, self.params, self.tokenizer)


def to_device(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float32), jnp.float32), params)


def load_model(path: str | Path, name: str | None = None) -> ModelBundle:
    """Loads a local HF folder (config.json + safetensors [+ tokenizer]) or a .gguf file."""
    from pspec_jax.models.loaders import load_gguf, load_hf_folder
    from pspec_jax.models.tokenizer import load_tokenizer

    p = Path(str(path)).expanduser()
    if not p.exists():
        raise UserError(f"no model at {p} (expected a folder with config.json and "
                        "*.safetensors, or a .gguf file)")
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise UserError(f"{p} is a file but not a .gguf model; give a GGUF file or a folder")
        cfg, params, tok = load_gguf(p)
    else:
        cfg, params = load_hf_folder(p)
        tok = load_tokenizer(p)
    if tok is not None and len(tok) > cfg.vocab_size:
        raise UserError(f"{p}: the tokenizer has {len(tok)} tokens but the model only "
                        f"{cfg.vocab_size} embedding rows")
    return ModelBundle(cfg, to_device(params), tok, name or p.name)


def tiny_model(family: str = "llama", seed: int = 0, randomize: bool = True,
               std: float = 0.5, **overrides: Any) -> ModelBundle:
    """A tiny random model (no tokenizer) for tests: see `tiny_config` for the defaults.

    `std` is large (0.5) by default so next-token distributions are far from uniform;
    `randomize` also perturbs norm scales and biases away from 1 and 0.
    """
    cfg = tiny_config(family, **overrides)
    key = jax.random.PRNGKey(seed)
    params = arch.init_params(cfg, key, std=std)
    if randomize:
        params = arch.randomize_norms(params, jax.random.fold_in(key, 1))
    return ModelBundle(cfg, params, None, f"tiny-{family}-{seed}")


# Real models' shapes, for benchmarks and range tests with random weights (no download).
RANDOM_SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(family="gpt2", vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
                       max_seq_len=1024),
    "smollm2-135m": dict(family="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
                         head_dim=64, d_ff=1536, max_seq_len=8192, rope_theta=100000.0),
    "d960": dict(family="llama", vocab_size=49152, d_model=960, n_layers=2, n_heads=15, n_kv_heads=5,
                 head_dim=64, d_ff=2560, max_seq_len=8192, rope_theta=100000.0),  # SmolLM2-360M's width
    "llama7b-layer": dict(family="llama", vocab_size=512, d_model=4096, n_layers=1, n_heads=32, n_kv_heads=32,
                          head_dim=128, d_ff=11008, max_seq_len=4096),  # one LLaMA-7B block, a small vocabulary
}
MASSIVE_ACTIVATION = 1.5e4  # SmolLM2-135M's first-token residual reaches 2.2e4 in a few dimensions


def shaped_model(name: str, seed: int = 7, max_seq_len: int | None = None) -> ModelBundle:
    """A random-weight model of a real shape (`RANDOM_SHAPES`) at realistic scales: init
    std 0.02; a head of std 0.2 (tied to the embedding for GPT-2) so logits spread over
    tens of units; and massive activations, `MASSIVE_ACTIVATION` in two residual
    dimensions on the first token as real LLMs have (GPT-2: position 0's embedding;
    LLaMA shapes, which have no position table: token 0's embedding, with an untied head,
    and token 0 opens the calibration sequences, `pspec_jax.secure.ranges.calibration_ids`)."""
    if name not in RANDOM_SHAPES:
        raise UserError(f"unknown model shape {name!r}; choose from {', '.join(RANDOM_SHAPES)}")
    kw = dict(RANDOM_SHAPES[name])
    if max_seq_len is not None:
        kw["max_seq_len"] = max_seq_len
    family = kw.pop("family")
    if family == "llama":
        kw.update(tie_embeddings=False, bos_token_id=0)
    cfg = tiny_config(family, **kw)
    key = jax.random.PRNGKey(seed)
    params = arch.init_params(cfg, key, std=0.02)
    if family == "gpt2":
        embed = np.array(params["embed"]) * 10.0
        pos = np.array(params["pos_embed"])
        pos[0, :2] = MASSIVE_ACTIVATION
        return ModelBundle(cfg, {**params, "embed": jnp.asarray(embed), "pos_embed": jnp.asarray(pos)}, None,
                           f"random-{name}")
    embed = np.array(params["embed"])
    embed[0, :2] = MASSIVE_ACTIVATION
    head = np.array(params["lm_head"]["w"]) * 10.0
    return ModelBundle(cfg, {**params, "embed": jnp.asarray(embed), "lm_head": {**params["lm_head"], "w": jnp.asarray(head)}},
                       None, f"random-{name}")
