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
    params: dict[str, Any]
    tokenizer: Any = None
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
