"""Loaders: local Hugging Face folders (config.json + safetensors) and GGUF files.

HF names (GPT-2 and LLaMA) map to the arch.py params layout; `save_hf_folder` writes the
inverse, so a converted folder is also a valid `transformers` checkpoint (the parity
tests load it in PyTorch). GGUF: Q4_1/Q8_0/F16/F32 (and every other type gguf-py
dequantises) become float32; llama.cpp's interleaving of Q/K rows for its RoPE kernel is
undone so the weights match the HF rotate_half layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pspec_jax.errors import UserError
from pspec_jax.models.config import ModelConfig, default_head_dim

F32 = np.float32


def _first_line(err: BaseException) -> str:
    s = str(err).strip()
    return s.splitlines()[0] if s else type(err).__name__


# ============================================================ HF names <-> arch layout
def _gpt2_from_hf(config: ModelConfig, sd: dict[str, np.ndarray]) -> dict[str, Any]:
    pre = "transformer." if "transformer.wte.weight" in sd else ""
    d = config.d_model

    def g(name):
        try:
            return np.asarray(sd[pre + name], F32)
        except KeyError:
            raise UserError(f"checkpoint lacks the tensor {pre + name!r}") from None

    layers = []
    for i in range(config.n_layers):
        h = f"h.{i}."
        qkv_w, qkv_b = g(h + "attn.c_attn.weight"), g(h + "attn.c_attn.bias")  # (d, 3d) Conv1D
        layers.append({
            "attn_norm": {"scale": g(h + "ln_1.weight"), "bias": g(h + "ln_1.bias")},
            "q": {"w": qkv_w[:, :d], "b": qkv_b[:d]},
            "k": {"w": qkv_w[:, d:2 * d], "b": qkv_b[d:2 * d]},
            "v": {"w": qkv_w[:, 2 * d:], "b": qkv_b[2 * d:]},
            "o": {"w": g(h + "attn.c_proj.weight"), "b": g(h + "attn.c_proj.bias")},
            "mlp_norm": {"scale": g(h + "ln_2.weight"), "bias": g(h + "ln_2.bias")},
            "fc": {"w": g(h + "mlp.c_fc.weight"), "b": g(h + "mlp.c_fc.bias")},
            "proj": {"w": g(h + "mlp.c_proj.weight"), "b": g(h + "mlp.c_proj.bias")},
        })
    return {"embed": g("wte.weight"), "pos_embed": g("wpe.weight"), "layers": layers,
            "final_norm": {"scale": g("ln_f.weight"), "bias": g("ln_f.bias")}}


def _gpt2_to_hf(config: ModelConfig, p: dict[str, Any]) -> dict[str, np.ndarray]:
    sd = {"transformer.wte.weight": p["embed"], "transformer.wpe.weight": p["pos_embed"],
          "transformer.ln_f.weight": p["final_norm"]["scale"],
          "transformer.ln_f.bias": p["final_norm"]["bias"]}
    for i in range(config.n_layers):
        lp, h = p["layers"][i], f"transformer.h.{i}."
        sd[h + "ln_1.weight"], sd[h + "ln_1.bias"] = lp["attn_norm"]["scale"], lp["attn_norm"]["bias"]
        sd[h + "attn.c_attn.weight"] = np.concatenate([lp[n]["w"] for n in "qkv"], axis=1)
        sd[h + "attn.c_attn.bias"] = np.concatenate([lp[n]["b"] for n in "qkv"])
        sd[h + "attn.c_proj.weight"], sd[h + "attn.c_proj.bias"] = lp["o"]["w"], lp["o"]["b"]
        sd[h + "ln_2.weight"], sd[h + "ln_2.bias"] = lp["mlp_norm"]["scale"], lp["mlp_norm"]["bias"]
        sd[h + "mlp.c_fc.weight"], sd[h + "mlp.c_fc.bias"] = lp["fc"]["w"], lp["fc"]["b"]
        sd[h + "mlp.c_proj.weight"], sd[h + "mlp.c_proj.bias"] = lp["proj"]["w"], lp["proj"]["b"]
    return sd


_LLAMA_LIN = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
              "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
              "down": "mlp.down_proj"}


def _llama_from_hf(config: ModelConfig, sd: dict[str, np.ndarray]) -> dict[str, Any]:
    def g(name):
        try:
            return np.asarray(sd[name], F32)
        except KeyError:
            raise UserError(f"checkpoint lacks the tensor {name!r}") from None

    layers = []
    for i in range(config.n_layers):
        h = f"model.layers.{i}."
        lp: dict[str, Any] = {"attn_norm": {"scale": g(h + "input_layernorm.weight")},
                              "mlp_norm": {"scale": g(h + "post_attention_layernorm.weight")}}
        for ours, theirs in _LLAMA_LIN.items():
            lp[ours] = {"w": np.ascontiguousarray(g(h + theirs + ".weight").T)}  # (out,in)->(in,out)
            bias = config.attention_bias if ours in "qkvo" else config.mlp_bias
            if bias:
                lp[ours]["b"] = g(h + theirs + ".bias")
        layers.append(lp)
    p = {"embed": g("model.embed_tokens.weight"), "layers": layers,
         "final_norm": {"scale": g("model.norm.weight")}}
    if not config.tie_embeddings:
        p["lm_head"] = {"w": np.ascontiguousarray(g("lm_head.weight").T)}
    return p


def _llama_to_hf(config: ModelConfig, p: dict[str, Any]) -> dict[str, np.ndarray]:
    sd = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]["scale"]}
    for i in range(config.n_layers):
        lp, h = p["layers"][i], f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = lp["attn_norm"]["scale"]
        sd[h + "post_attention_layernorm.weight"] = lp["mlp_norm"]["scale"]
        for ours, theirs in _LLAMA_LIN.items():
            sd[h + theirs + ".weight"] = np.asarray(lp[ours]["w"]).T
            if "b" in lp[ours]:
                sd[h + theirs + ".bias"] = lp[ours]["b"]
    if not config.tie_embeddings:
        sd["lm_head.weight"] = np.asarray(p["lm_head"]["w"]).T
    return sd


def params_from_hf_state_dict(config: ModelConfig, sd: dict[str, Any]) -> dict[str, Any]:
    """HF tensor names -> arch.py params (numpy float32; torch tensors are accepted)."""
    sd = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
          for k, v in sd.items()}
    if config.family == "gpt2":
        return _gpt2_from_hf(config, sd)
    return _llama_from_hf(config, sd)


def hf_state_dict_from_params(config: ModelConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
    import jax

    params = jax.tree_util.tree_map(lambda a: np.asarray(a, F32), params)
    sd = _gpt2_to_hf(config, params) if config.family == "gpt2" else _llama_to_hf(config, params)
    return {k: np.ascontiguousarray(v, F32) for k, v in sd.items()}


# ============================================================ HF folders
def read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    sd: dict[str, np.ndarray] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="numpy") as fh:
                for k in fh.keys():
                    sd[k] = fh.get_tensor(k)
        except Exception as err:  # header, dtype or size errors from a corrupt/truncated file
            raise UserError(f"corrupt or truncated safetensors file {f}: {_first_line(err)}") from None
    return sd


def load_hf_folder(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """(config, numpy params) from a folder with config.json and *.safetensors."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no model folder at {path}")
    config = ModelConfig.from_json(path / "config.json")
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise UserError(f"corrupt {index}: {_first_line(err)}") from None
        files = [path / n for n in names]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"no .safetensors weights in {path}")
    sd = read_safetensors(files)
    params = params_from_hf_state_dict(config, sd)
    _check_shapes(config, params, str(path))
    return config, params


def save_hf_folder(path: str | Path, config: ModelConfig, params: dict[str, Any],
                   tokenizer: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """Writes config.json + model.safetensors (HF names, float32) [+ tokenizer files]."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = config.to_hf_dict()
    if extra:
        cfg.update(extra)
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(hf_state_dict_from_params(config, params), str(path / "model.safetensors"),
              metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def _check_shapes(config: ModelConfig, params: dict[str, Any], where: str) -> None:
    """Raises UserError naming the first tensor whose shape the config does not expect."""
    import jax

    from pspec_jax.models.arch import init_params

    want = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    got_l = {jax.tree_util.keystr(k): np.shape(a) for k, a in jax.tree_util.tree_flatten_with_path(params)[0]}
    want_l = {jax.tree_util.keystr(k): a.shape for k, a in jax.tree_util.tree_flatten_with_path(want)[0]}
    for k, shape in want_l.items():
        if k not in got_l:
            raise UserError(f"{where}: missing tensor {k}")
        if tuple(got_l[k]) != tuple(shape):
            raise UserError(f"{where}: tensor {k} has shape {tuple(got_l[k])}, "
                            f"the config needs {tuple(shape)}")


# ============================================================ GGUF
def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's `permute` of Q/K rows (convert_hf_to_gguf.py).

    llama.cpp stores each head's rows interleaved (pairs (i, i + D/2) adjacent) for its
    GPT-J style RoPE; HF rotates halves. With w (n_head*D, in) in llama.cpp order,
    rows are reshaped (n_head, D/2, 2, in) and the two middle axes swapped back.
    """
    out = w.shape[0]
    return (w.reshape(n_head, out // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's permutation (the inverse of `unpermute_qk`), for writing GGUF files."""
    out = w.shape[0]
    return (w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _gguf_fields(reader) -> dict[str, Any]:
    out = {}
    for k, f in reader.fields.items():
        try:
            out[k] = f.contents()
        except Exception:  # unreadable field types are skipped; required ones are checked later
            continue
    return out


def load_gguf(path: str | Path, with_tokenizer: bool = True):
    """(config, numpy float32 params, tokenizer or None) from a llama-architecture GGUF."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no GGUF file at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
        fields = _gguf_fields(reader)
        tensors = {t.name: t for t in reader.tensors}
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"corrupt or truncated GGUF file {path}: {_first_line(err)}") from None
    arch_name = fields.get("general.architecture")
    if arch_name != "llama":
        raise UserError(f"{path}: GGUF architecture {arch_name!r} is not supported (only llama)")

    def scalar(key, kind, default=None, required=True):
        """Metadata `key` as one int or float (GGUF fields may hold arrays or strings)."""
        v = fields.get(key, default)
        if v is None:
            if required:
                raise UserError(f"{path}: GGUF metadata lacks {key}")
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or (kind is int and float(v) != int(v)):
            raise UserError(f"{path}: GGUF metadata {key} must be one "
                            f"{'integer' if kind is int else 'number'}, got {_short(v)}")
        return kind(v)

    def meta(key, kind=int, default=None):
        return scalar(f"llama.{key}", kind, default)

    n_heads = meta("attention.head_count")
    d_model = meta("embedding_length")
    key_length = scalar("llama.attention.key_length", int, required=False)
    try:
        vocab = scalar("llama.vocab_size", int, required=False) or int(tensors["token_embd.weight"].shape[-1])
    except KeyError:
        raise UserError(f"{path}: GGUF has no token_embd.weight") from None
    config = ModelConfig(
        family="llama", vocab_size=vocab, d_model=d_model, n_layers=meta("block_count"),
        n_heads=n_heads, n_kv_heads=meta("attention.head_count_kv", default=n_heads),
        head_dim=key_length or default_head_dim(d_model, n_heads, f"{path}: GGUF"),
        d_ff=meta("feed_forward_length"), max_seq_len=meta("context_length", default=2048),
        # GGUF keeps these as float32: take the shortest decimal that rounds to it (1e-05).
        norm_eps=float(str(np.float32(meta("attention.layer_norm_rms_epsilon", float, 1e-5)))),
        rope_theta=float(str(np.float32(meta("rope.freq_base", float, 10000.0)))),
        tie_embeddings="output.weight" not in tensors,
        bos_token_id=scalar("tokenizer.ggml.bos_token_id", int, required=False),
        eos_token_id=scalar("tokenizer.ggml.eos_token_id", int, required=False))

    def get(name):
        t = tensors.get(name)
        if t is None:
            raise UserError(f"{path}: GGUF lacks the tensor {name!r}")
        try:
            a = gguf.quants.dequantize(t.data, t.tensor_type)
        except Exception as err:
            raise UserError(f"{path}: cannot dequantise {name} ({t.tensor_type.name}): "
                            f"{_first_line(err)}") from None
        return np.ascontiguousarray(a, F32)

    sd: dict[str, np.ndarray] = {"model.embed_tokens.weight": get("token_embd.weight"),
                                 "model.norm.weight": get("output_norm.weight")}
    if not config.tie_embeddings:
        sd["lm_head.weight"] = get("output.weight")
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(config.n_layers):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        sd[h + "input_layernorm.weight"] = get(b + "attn_norm.weight")
        sd[h + "post_attention_layernorm.weight"] = get(b + "ffn_norm.weight")
        for g_name, hf in names.items():
            w = get(b + g_name + ".weight")  # (out, in), HF order except for q/k rows
            if g_name in ("attn_q", "attn_k"):
                heads = config.n_heads if g_name == "attn_q" else config.n_kv_heads
                if w.shape[0] != heads * config.head_dim:
                    raise UserError(f"{path}: {b + g_name}.weight has {w.shape[0]} rows, not "
                                    f"{heads} heads × {config.head_dim}")
                w = unpermute_qk(w, heads)
            sd[h + hf + ".weight"] = w
    params = params_from_hf_state_dict(config, sd)
    _check_shapes(config, params, str(path))
    tok = None
    if with_tokenizer and "tokenizer.ggml.tokens" in fields:
        from pspec_jax.models.tokenizer import tokenizer_from_gguf_fields

        tok = tokenizer_from_gguf_fields(fields)
    return config, params, tok
