"""GPT-2 and LLaMA decoders in Flax, their KV cache, loaders and the default model pair.

Python API (all arrays float32; params are plain pytrees, see arch.py for the layout):

  load_model(path) -> ModelBundle
      a local HF folder (config.json + *.safetensors [+ tokenizer]) or a .gguf file.
  load_default_base() -> ModelBundle
      the public base SmolLM2-135M-Instruct, fetched and converted into $PSPEC_HOME on first use.
  load_default_private() -> ModelBundle
      the default private model: the server's fine-tune of the base (distill/private.py),
      built from the shipped delta on first use. default.resolve_private(spec) reads
      --private (DEFAULT | base | path); default.resolve_private_public(spec) gives only
      its config and tokenizer (what a real run's client may hold).
  load_default_drafter(num_layers=DEFAULT_DRAFTER_LAYERS) -> ModelBundle
      the base's first `num_layers` blocks + final norm + tied head (untrained).
  load_default_pair(num_layers=...) -> (private, drafter);  fetch_default(force=False) -> Path
  tiny_model(family="llama"|"gpt2", seed=0, **config_overrides) -> ModelBundle (no tokenizer)
  tiny_config(family, **overrides) -> ModelConfig;  init_params(config, key) -> params

  ModelBundle(config, params, tokenizer, name): unpacks as `config, params, tok = bundle`;
      .truncated(k), .module() (an nnx Transformer), .forward(ids, cache), .save(dir).
  ModelConfig: frozen, hashable (a static jit argument); .from_hf_dict / .to_hf_dict.

  forward(config, params, token_ids (B, T), cache=None, ops=PLAIN) -> (logits (B,T,V), cache)
      THE architecture, written once against the `ops` backend protocol (ops.py), so the
      secure backend runs the same definition over shares. forward_jit: the same, jitted
      (config and ops static).
  KVCache(layers, length); init_cache(config, batch, max_len) ; cache.rollback(n)
  Transformer / GPT2 / Llama: nnx modules owning the params and calling `forward`.
  load_gguf(path), load_hf_folder(path), save_hf_folder(path, config, params, tokenizer),
  params_from_hf_state_dict(config, state_dict) (torch tensors accepted).
"""

from pspec_jax.models.arch import (forward, forward_jit, init_params, param_count, rope_tables,
                                   truncate_params)
from pspec_jax.models.bundle import ModelBundle, load_model, tiny_model, to_device
from pspec_jax.models.cache import KVCache, init_cache
from pspec_jax.models.config import ModelConfig, tiny_config
from pspec_jax.models.default import (DEFAULT_DRAFTER_LAYERS, fetch_default, is_fetched,
                                      load_default_base, load_default_drafter, load_default_pair,
                                      load_default_private, pspec_home)
from pspec_jax.models.loaders import (load_gguf, load_hf_folder, params_from_hf_state_dict,
                                      save_hf_folder)
from pspec_jax.models.modules import GPT2, Llama, Transformer
from pspec_jax.models.ops import PLAIN, Ops, PlainOps
from pspec_jax.models.tokenizer import check_same_tokenizer, load_tokenizer

__all__ = [
    "DEFAULT_DRAFTER_LAYERS", "GPT2", "KVCache", "Llama", "ModelBundle", "ModelConfig", "Ops",
    "PLAIN", "PlainOps", "Transformer", "check_same_tokenizer", "fetch_default", "forward",
    "forward_jit",
    "init_cache", "init_params", "is_fetched", "load_default_base", "load_default_drafter",
    "load_default_pair",
    "load_default_private", "load_gguf", "load_hf_folder", "load_model", "load_tokenizer",
    "param_count", "params_from_hf_state_dict", "pspec_home", "rope_tables", "save_hf_folder",
    "tiny_config", "tiny_model", "to_device", "truncate_params",
]
