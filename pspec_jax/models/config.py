"""Model configuration: one frozen dataclass for both families, read from HF config.json.

The config is hashable so it can be a static argument to `jax.jit`; it is validated at
construction (the offending numbers are in the message).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pspec_jax.errors import UserError

Family = Literal["gpt2", "llama"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a GPT-2 or LLaMA-family decoder.

    Attributes:
      family: "gpt2" (LayerNorm, tanh-GeLU, learned positions, biases, tied head) or
        "llama" (RMSNorm, SwiGLU, RoPE, grouped-query attention, optional tied head).
      vocab_size: rows of the token embedding.
      d_model: residual width.
      n_layers: transformer blocks.
      n_heads: query heads.
      n_kv_heads: key/value heads (GQA when < n_heads; GPT-2 always n_heads).
      head_dim: width of one head (d_model // n_heads unless the checkpoint says otherwise).
      d_ff: hidden width of the MLP.
      max_seq_len: context length (GPT-2: rows of the position table).
      norm_eps: epsilon of LayerNorm/RMSNorm.
      rope_theta: RoPE base (LLaMA only).
      tie_embeddings: LM head = token embedding transposed.
      attention_bias: q/k/v/o projections carry biases (GPT-2: always; LLaMA: config).
      mlp_bias: MLP projections carry biases (GPT-2: always; LLaMA: config).
      bos_token_id, eos_token_id: special ids (None when unknown).
    """

    family: Family
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    max_seq_len: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.family not in ("gpt2", "llama"):
            raise UserError(f"unknown model family {self.family!r} (expected gpt2 or llama)")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "d_ff", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"model config: {name} must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model config: n_heads={self.n_heads} is not a multiple of "
                            f"n_kv_heads={self.n_kv_heads}")
        if self.family == "gpt2":
            if self.n_kv_heads != self.n_heads or self.head_dim * self.n_heads != self.d_model:
                raise UserError(f"gpt2 config: need n_kv_heads == n_heads and head_dim*n_heads"
                                f" == d_model, got {self.n_kv_heads}, {self.n_heads}, "
                                f"{self.head_dim}, {self.d_model}")
        if self.family == "llama" and self.head_dim % 2:
            raise UserError(f"llama config: RoPE needs an even head_dim, got {self.head_dim}")

    @property
    def has_attn_bias(self) -> bool:
        return self.family == "gpt2" or self.attention_bias

    @property
    def has_mlp_bias(self) -> bool:
        return self.family == "gpt2" or self.mlp_bias

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- HF config.json
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Reads a Hugging Face `config.json` dict (GPT2Config or LlamaConfig fields)."""
        mt = d.get("model_type", "")
        archs = " ".join(d.get("architectures") or [])
        try:
            if mt == "gpt2" or "GPT2" in archs:
                d_model = int(d["n_embd"])
                n_heads = int(d["n_head"])
                act = d.get("activation_function", "gelu_new")
                if act not in ("gelu_new", "gelu_pytorch_tanh"):
                    raise UserError(f"gpt2 config: unsupported activation_function {act!r} "
                                    "(only the tanh GeLU, gelu_new, is implemented)")
                return cls(
                    family="gpt2", vocab_size=int(d["vocab_size"]), d_model=d_model,
                    n_layers=int(d["n_layer"]), n_heads=n_heads, n_kv_heads=n_heads,
                    head_dim=default_head_dim(d_model, n_heads, "gpt2 config"),
                    d_ff=int(d.get("n_inner") or 4 * d_model),
                    max_seq_len=int(d.get("n_positions", 1024)),
                    norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
                    tie_embeddings=True, attention_bias=True, mlp_bias=True,
                    bos_token_id=d.get("bos_token_id"), eos_token_id=_first(d.get("eos_token_id")))
            if mt in ("llama", "mistral", "qwen2") or "Llama" in archs:
                d_model = int(d["hidden_size"])
                n_heads = int(d["num_attention_heads"])
                rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
                rtype = rope.get("rope_type", rope.get("type", "default"))
                if rtype not in ("default", None):
                    raise UserError(f"llama config: unsupported rope scaling {rtype!r}")
                theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
                if d.get("hidden_act", "silu") != "silu":
                    raise UserError(f"llama config: unsupported hidden_act {d['hidden_act']!r}")
                return cls(
                    family="llama", vocab_size=int(d["vocab_size"]), d_model=d_model,
                    n_layers=int(d["num_hidden_layers"]), n_heads=n_heads,
                    n_kv_heads=int(d.get("num_key_value_heads") or n_heads),
                    head_dim=int(d.get("head_dim") or default_head_dim(d_model, n_heads, "llama config")),
                    d_ff=int(d["intermediate_size"]),
                    max_seq_len=int(d.get("max_position_embeddings", 2048)),
                    norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
                    tie_embeddings=bool(d.get("tie_word_embeddings", False)),
                    attention_bias=bool(d.get("attention_bias", False)),
                    mlp_bias=bool(d.get("mlp_bias", False)),
                    bos_token_id=d.get("bos_token_id"), eos_token_id=_first(d.get("eos_token_id")))
        except KeyError as err:
            raise UserError(f"config.json lacks the field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise UserError(f"config.json has a malformed field: {err}") from None
        raise UserError(f"unsupported model_type {mt!r} (supported: gpt2, llama)")

    def to_hf_dict(self) -> dict[str, Any]:
        """The inverse of `from_hf_dict`: a config.json that `transformers` also reads."""
        if self.family == "gpt2":
            return {
                "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "vocab_size": self.vocab_size, "n_embd": self.d_model, "n_layer": self.n_layers,
                "n_head": self.n_heads, "n_inner": self.d_ff, "n_positions": self.max_seq_len,
                "layer_norm_epsilon": self.norm_eps, "activation_function": "gelu_new",
                "tie_word_embeddings": True,
                "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            }
        return {
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab_size, "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers, "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads, "head_dim": self.head_dim,
            "intermediate_size": self.d_ff, "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps, "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_embeddings, "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias, "hidden_act": "silu", "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
        }

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"no config.json at {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read {path}: {err}") from None
        if not isinstance(d, dict):
            raise UserError(f"{path} is not a JSON object")
        return cls.from_hf_dict(d)


def default_head_dim(d_model: int, n_heads: int, where: str) -> int:
    """d_model // n_heads, the head width when a checkpoint does not state it; a one-line
    error when the head count is not positive or does not divide d_model."""
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise UserError(f"{where}: the attention head count must be a positive integer, got {n_heads!r}")
    if d_model % n_heads:
        raise UserError(f"{where}: d_model={d_model} is not divisible by the head count {n_heads} "
                        "(and no head width is given)")
    return d_model // n_heads


def _first(v: Any) -> int | None:
    if isinstance(v, list):
        return int(v[0]) if v else None
    return None if v is None else int(v)


def tiny_config(family: Family = "llama", **overrides: Any) -> ModelConfig:
    """A small config for tests: 2 layers, d=32, vocab 64 (GQA 4/2 heads for LLaMA)."""
    base: dict[str, Any] = dict(vocab_size=64, d_model=32, n_layers=2, d_ff=64, max_seq_len=64)
    if family == "gpt2":
        base.update(family="gpt2", n_heads=4, n_kv_heads=4, head_dim=8, tie_embeddings=True,
                    attention_bias=True, mlp_bias=True)
    else:
        base.update(family="llama", n_heads=4, n_kv_heads=2, head_dim=8, tie_embeddings=True,
                    rope_theta=10000.0)
    base.update(overrides)
    if "d_model" in overrides and "head_dim" not in overrides:
        base["head_dim"] = base["d_model"] // base["n_heads"]
    if base["family"] == "gpt2":
        base["n_kv_heads"] = base["n_heads"]
    return ModelConfig(**base)


def smollm2_135m_config(**overrides: Any) -> ModelConfig:
    """SmolLM2-135M(-Instruct)'s shape (what `pspec fetch` loads; `tests/test_models_smollm2`
    checks the loaded model against it): 30 LLaMA blocks, d 576, 9 query / 3 key-value heads
    of 64, SwiGLU 1536, vocabulary 49,152, RoPE θ 1e5, RMSNorm, tied embeddings. For
    benchmarks with random weights (`init_params`) where the checkpoint is not at hand."""
    base: dict[str, Any] = dict(family="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                                n_kv_heads=3, head_dim=64, d_ff=1536, max_seq_len=8192, norm_eps=1e-5,
                                rope_theta=100000.0, tie_embeddings=True, bos_token_id=1, eos_token_id=2)
    base.update(overrides)
    return ModelConfig(**base)
