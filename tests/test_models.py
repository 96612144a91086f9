"""Architectures, KV cache, backend discipline, configs, HF/GGUF loaders, torch parity."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pspec_jax.errors import UserError
from pspec_jax.models import (KVCache, ModelConfig, Transformer, init_cache, load_gguf,
                              load_hf_folder, load_model, tiny_config, tiny_model)
from pspec_jax.models import forward_jit as forward  # tiny models: jit beats op-by-op compiles
from pspec_jax.models.arch import forward as forward_eager
from pspec_jax.models.loaders import permute_qk, unpermute_qk
from pspec_jax.models.ops import PlainOps

FAMILIES = ["gpt2", "llama"]


def _ids(n, vocab, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (2, n), 0, vocab, dtype=jnp.int32)


# ------------------------------------------------------------------ KV cache
@pytest.mark.parametrize("family", FAMILIES)
def test_one_at_a_time_chunked_and_full_forward_agree(family):
    m = tiny_model(family, seed=3, std=0.3)  # logits of a few units: 1e-5 is ~1e-6 relative
    ids = _ids(11, m.config.vocab_size)
    full, _ = forward(m.config, m.params, ids)  # (2, 11, V), no cache
    assert full.dtype == jnp.float32
    cache = init_cache(m.config, 2, 32)
    ones = []
    for t in range(11):
        lg, cache = forward(m.config, m.params, ids[:, t:t + 1], cache)
        ones.append(lg)
    ones = jnp.concatenate(ones, axis=1)
    assert int(cache.length) == 11
    cache = init_cache(m.config, 2, 32)
    chunks = []
    for a, b in [(0, 4), (4, 5), (5, 9), (9, 11)]:  # γ+1-sized and odd chunks
        lg, cache = forward(m.config, m.params, ids[:, a:b], cache)
        chunks.append(lg)
    chunks = jnp.concatenate(chunks, axis=1)
    assert float(jnp.max(jnp.abs(full))) > 1.0  # non-trivial logits
    np.testing.assert_allclose(ones, full, atol=1e-5, rtol=0)
    np.testing.assert_allclose(chunks, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_folding_norm_scales_keeps_the_function(family):
    """`fold_norm_scales` (what the secure session runs on) computes the same logits; only
    the final norm keeps its scale (it feeds the tied head)."""
    from pspec_jax.models.arch import fold_norm_scales

    m = tiny_model(family, seed=5, std=0.3, attention_bias=(family == "llama"))  # norms and biases random
    ids = _ids(7, m.config.vocab_size, seed=3)
    folded = fold_norm_scales(m.config, m.params)
    assert all(layer[n]["scale"] is None and layer[n].get("bias") is None
               for layer in folded["layers"] for n in ("attn_norm", "mlp_norm"))
    assert folded["final_norm"]["scale"] is not None
    ref, _ = forward(m.config, m.params, ids)
    got, _ = forward(m.config, folded, ids)
    assert float(jnp.max(jnp.abs(ref))) > 1.0
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_rollback_then_append_equals_fresh_prefix(family):
    m = tiny_model(family, seed=4, std=0.3)
    ids = _ids(9, m.config.vocab_size, seed=1)
    other = _ids(9, m.config.vocab_size, seed=2)
    cache = init_cache(m.config, 2, 32)
    _, cache = forward(m.config, m.params, ids[:, :5], cache)
    _, cache = forward(m.config, m.params, other[:, :4], cache)  # junk, then discarded
    cache = cache.rollback(5)
    lg, cache = forward(m.config, m.params, ids[:, 5:], cache)
    full, _ = forward(m.config, m.params, ids)
    np.testing.assert_allclose(lg, full[:, 5:], atol=1e-5, rtol=0)
    assert int(cache.length) == 9
    # and the stale rows really were different (the test above could not pass by accident)
    wrong, _ = forward(m.config, m.params, jnp.concatenate([ids[:, :5], other[:, :4]], 1))
    assert float(jnp.max(jnp.abs(wrong[:, 5:] - full[:, 5:]))) > 1e-2


def test_cache_is_a_pytree_with_fixed_shapes():
    m = tiny_model("llama")
    cache = init_cache(m.config, 1, 24)
    leaves = jax.tree_util.tree_leaves(cache)
    assert len(leaves) == 2 * m.config.n_layers + 1
    _, c2 = forward(m.config, m.params, _ids(3, 64)[:1], cache)
    assert [a.shape for a in jax.tree_util.tree_leaves(c2)] == [a.shape for a in leaves]
    assert cache.max_len == 24 and int(c2.length) == 3 and isinstance(c2, KVCache)


# ------------------------------------------------------------------ backend discipline
class Restricted:
    """An activation that supports only what a secret-shared tensor supports."""

    def __init__(self, a):
        self.a = a

    shape = property(lambda self: self.a.shape)

    def __add__(self, o):
        return Restricted(self.a + _unwrap(o))

    __radd__ = __add__

    def __sub__(self, o):
        return Restricted(self.a - _unwrap(o))

    def __rsub__(self, o):
        return Restricted(_unwrap(o) - self.a)

    def __neg__(self):
        return Restricted(-self.a)

    def reshape(self, *s):
        return Restricted(self.a.reshape(*s))

    def transpose(self, *s):
        return Restricted(self.a.transpose(*s))

    def swapaxes(self, i, j):
        return Restricted(self.a.swapaxes(i, j))

    def __getitem__(self, idx):
        return Restricted(self.a[idx])

    def __mul__(self, o):
        raise AssertionError("architecture code multiplied an activation: use ops.mul/ops.scale")

    __rmul__ = __matmul__ = __rmatmul__ = __truediv__ = __mul__

    def __jax_array__(self):
        raise AssertionError("architecture code passed an activation to jnp directly")

    __array__ = __jax_array__


def _unwrap(x):
    if isinstance(x, Restricted):
        return x.a
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    return x


class RestrictedOps:
    """Runs PlainOps on unwrapped values; every activation crosses the API as Restricted."""

    def __init__(self):
        self.plain = PlainOps()
        self.calls = set()

    def __getattr__(self, name):
        fn = getattr(self.plain, name)

        def wrapped(*args, **kw):
            self.calls.add(name)
            out = fn(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kw.items()})
            if name == "attention":
                return out[0], Restricted(out[1])
            if name in ("linear_many", "rope_many"):
                return [Restricted(o) for o in out]
            if name == "new_layer_cache":
                return out
            return Restricted(out)

        return wrapped


@pytest.mark.parametrize("family", FAMILIES)
def test_architecture_touches_activations_only_through_ops(family):
    m = tiny_model(family, seed=5, std=0.3)
    ids = _ids(5, m.config.vocab_size)
    ref, _ = forward(m.config, m.params, ids)
    ops = RestrictedOps()
    cache = init_cache(m.config, 2, 8, ops=ops)
    out, cache = forward_eager(m.config, m.params, ids[:, :3], cache, ops=ops)
    out2, _ = forward_eager(m.config, m.params, ids[:, 3:], cache, ops=ops)
    got = jnp.concatenate([out.a, out2.a], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    expected = {"embed", "linear", "linear_many", "attention", "new_layer_cache"}
    expected |= {"layernorm", "gelu"} if family == "gpt2" else {"rmsnorm", "silu", "mul", "rope_many"}
    assert expected <= ops.calls


# ------------------------------------------------------------------ nnx modules
def test_nnx_module_owns_params_and_matches_forward():
    from flax import nnx

    m = tiny_model("llama", seed=6, std=0.3)
    mod = Transformer(m.config, m.params)
    ids = _ids(4, 64)
    call = nnx.jit(lambda model, x: model(x)[0])
    np.testing.assert_allclose(call(mod, ids), forward(m.config, m.params, ids)[0], atol=1e-5)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(mod, nnx.Param)))
    assert n_params == sum(x.size for x in jax.tree_util.tree_leaves(m.params))

    def loss(model):
        return jnp.mean(jax.nn.log_softmax(model(ids)[0])[..., 0])

    grads = nnx.jit(nnx.grad(loss))(mod)
    g = jax.tree_util.tree_leaves(grads)
    assert len(g) == len(jax.tree_util.tree_leaves(m.params))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)
    assert sum(float(jnp.sum(jnp.abs(x))) for x in g) > 0
    fresh = Transformer(tiny_config("gpt2"), rngs=nnx.Rngs(1))
    assert call(fresh, ids[:, :2] % 64).shape == (2, 2, 64)


def test_truncated_drafter_shares_layers():
    m = tiny_model("llama", seed=7, n_layers=4)
    d = m.truncated(2)
    assert d.config.n_layers == 2 and len(d.params["layers"]) == 2
    assert d.params["layers"][1]["q"]["w"] is m.params["layers"][1]["q"]["w"]
    assert d.params["embed"] is m.params["embed"]
    with pytest.raises(UserError):
        m.truncated(5)


# ------------------------------------------------------------------ configs
def test_config_roundtrip_and_validation():
    for fam in FAMILIES:
        c = tiny_config(fam, n_layers=3)
        assert ModelConfig.from_hf_dict(c.to_hf_dict()) == c.replace(bos_token_id=None, eos_token_id=None) or \
            ModelConfig.from_hf_dict(c.to_hf_dict()) == c
    with pytest.raises(UserError, match="multiple"):
        tiny_config("llama", n_heads=4, n_kv_heads=3)
    with pytest.raises(UserError, match="model_type"):
        ModelConfig.from_hf_dict({"model_type": "bert"})
    with pytest.raises(UserError, match="hidden_size"):
        ModelConfig.from_hf_dict({"model_type": "llama"})
    legacy = tiny_config("llama").to_hf_dict()
    legacy.pop("rope_parameters")
    legacy["rope_theta"] = 5000.0
    assert ModelConfig.from_hf_dict(legacy).rope_theta == 5000.0


# ------------------------------------------------------------------ HF folders
@pytest.mark.parametrize("family,tie", [("gpt2", True), ("llama", True), ("llama", False)])
def test_hf_folder_roundtrip(tmp_path, family, tie):
    m = tiny_model(family, seed=8, tie_embeddings=tie, attention_bias=(family == "gpt2"))
    m.save(tmp_path / "m")
    b = load_model(tmp_path / "m")
    assert b.config == m.config
    ids = _ids(6, 64)
    np.testing.assert_allclose(b.forward(ids)[0], m.forward(ids)[0], atol=1e-6)


def test_corrupt_and_truncated_safetensors_are_user_errors(tmp_path):
    m = tiny_model("llama")
    path = m.save(tmp_path / "m")
    st = path / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="safetensors"):
        load_model(path)
    st.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="safetensors"):
        load_model(path)
    with pytest.raises(UserError, match="no model"):
        load_model(tmp_path / "nope")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json"):
        load_model(path)


def test_wrong_shapes_are_user_errors(tmp_path):
    m = tiny_model("llama")
    path = m.save(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="shape"):
        load_hf_folder(path)


# ------------------------------------------------------------------ GGUF
def test_qk_permutation_inverse():
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)
    p = permute_qk(w, 4)
    assert not np.array_equal(p, w)
    np.testing.assert_array_equal(unpermute_qk(p, 4), w)
    # llama.cpp's interleave: within a head, row pairs (i, i + D/2) become adjacent
    np.testing.assert_array_equal(p[1], w[4])


def write_gguf(path, m, types, tokenizer=None, tweak=None):
    """A llama GGUF of bundle `m` as llama.cpp's converter writes it (Q/K permuted);
    `tweak(writer)` may overwrite metadata before the file is written."""
    import gguf

    from pspec_jax.models.loaders import hf_state_dict_from_params

    c = m.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.n_layers)
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.d_model)
    w.add_feed_forward_length(c.d_ff)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    if tokenizer is not None:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list([t for t, _ in vocab])
        w.add_token_types([3 if t == "<eos>" else 1 for t, _ in vocab])
        tj = json.loads(tokenizer.backend_tokenizer.to_str())
        w.add_token_merges([" ".join(mm) if isinstance(mm, list) else mm for mm in tj["model"]["merges"]])
        w.add_eos_token_id(tokenizer.eos_token_id)
        w.add_add_bos_token(False)
        w.add_chat_template(tokenizer.chat_template)
    sd = hf_state_dict_from_params(c, m.params)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for k, a in sd.items():
        if k == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif k == "model.norm.weight":
            name = "output_norm.weight"
        elif k == "lm_head.weight":
            name = "output.weight"
        else:
            i, rest = k.split(".", 3)[2], k.split(".", 3)[3].rsplit(".", 1)[0]
            name = f"blk.{i}.{names[rest]}.weight"
            if rest == "self_attn.q_proj":
                a = permute_qk(a, c.n_heads)
            elif rest == "self_attn.k_proj":
                a = permute_qk(a, c.n_kv_heads)
        qt = types.get(name.split(".")[-2], gguf.GGMLQuantizationType.F32) if a.ndim == 2 else gguf.GGMLQuantizationType.F32
        if qt in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(name, a.astype(np.float32 if qt == gguf.GGMLQuantizationType.F32 else np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qt), raw_shape=gguf.quants.quant_shape_to_byte_shape(a.shape, qt), raw_dtype=qt)
    if tweak is not None:
        tweak(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_f32_is_exact_and_permutation_undone(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import byte_tokenizer

    tok = byte_tokenizer()
    m = tiny_model("llama", seed=9, vocab_size=264, d_model=64, n_heads=4, n_kv_heads=2,
                   head_dim=16, tie_embeddings=False)
    path = write_gguf(tmp_path / "m.gguf", m, {}, tokenizer=tok)
    cfg, params, gtok = load_gguf(path)
    assert cfg == m.config.replace(eos_token_id=tok.eos_token_id, bos_token_id=None)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                           params, jax.tree_util.tree_map(np.asarray, m.params))
    text = "the theme: 2 + 2 = 4<eos>"
    assert gtok(text)["input_ids"] == tok(text)["input_ids"]
    assert gtok.eos_token_id == tok.eos_token_id and gtok.chat_template == tok.chat_template
    b = load_model(path)  # through the generic entry point too
    ids = _ids(5, 264)
    np.testing.assert_allclose(b.forward(ids)[0], m.forward(ids)[0], atol=1e-5)


def test_gguf_quantised_types_dequantise(tmp_path):
    import gguf

    Q = gguf.GGMLQuantizationType
    m = tiny_model("llama", seed=10, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16,
                   d_ff=128, std=0.1)
    types = {"attn_q": Q.Q4_1, "attn_k": Q.Q4_1, "attn_v": Q.Q8_0, "attn_output": Q.Q8_0,
             "ffn_gate": Q.Q4_1, "ffn_up": Q.F16, "ffn_down": Q.Q8_0, "token_embd": Q.Q8_0}
    path = write_gguf(tmp_path / "q.gguf", m, types)
    cfg, params, tok = load_gguf(path)
    assert tok is None
    for i in range(cfg.n_layers):
        for name, step in [("q", 1 / 15), ("v", 1 / 127), ("up", 1e-3)]:
            a = np.asarray(m.params["layers"][i][name]["w"])
            b = params["layers"][i][name]["w"]
            # per-block scale: error at most half a quantisation step of the block's range
            assert np.max(np.abs(a - b)) <= step * np.max(np.abs(a)) * 1.01 + 1e-6, name
            assert np.max(np.abs(a - b)) > 0 or name == "up"
    # q rows in HF order after un-permuting: the error is small, a permuted layout is not
    a = np.asarray(m.params["layers"][0]["q"]["w"])
    assert np.max(np.abs(a - params["layers"][0]["q"]["w"])) < 0.5 * np.max(np.abs(a - permute_qk(a.T, 4).T))


@pytest.mark.parametrize("key,value,msg", [
    ("llama.attention.head_count", [4, 4], "llama.attention.head_count must be one integer, got [4, 4]"),
    ("llama.embedding_length", "64", "llama.embedding_length must be one integer, got '64'"),
    ("llama.block_count", 2.5, "llama.block_count must be one integer, got 2.5"),
    ("llama.rope.freq_base", [1e4], "llama.rope.freq_base must be one number"),
    ("tokenizer.ggml.eos_token_id", [1, 2], "tokenizer.ggml.eos_token_id must be one integer"),
    ("llama.attention.head_count", 5, "d_model=64 is not divisible by the head count 5"),
    ("llama.attention.head_count", 0, "head count must be a positive integer, got 0"),
])
def test_gguf_bad_metadata_is_user_error(tmp_path, key, value, msg):
    """Arrays or strings where GGUF should hold one number, and head counts that do not
    divide the width: a one-line UserError naming the field, not a TypeError or a
    ZeroDivisionError from deep inside the loader."""
    def tweak(w):
        if isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)

    m = tiny_model("llama", seed=11, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16)
    path = write_gguf(tmp_path / "m.gguf", m, {}, tweak=tweak)
    with pytest.raises(UserError) as e:
        load_model(path)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_gguf_q_rows_that_do_not_fit_the_heads_are_user_error(tmp_path):
    """key_length stated but inconsistent with the q weight: one line, not a reshape error."""
    m = tiny_model("llama", seed=11, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16)
    path = write_gguf(tmp_path / "m.gguf", m, {}, tweak=lambda w: w.add_uint32("llama.attention.key_length", 12))
    with pytest.raises(UserError, match="attn_q.weight has 64 rows, not 4 heads × 12"):
        load_model(path)


@pytest.mark.parametrize("fields,msg", [
    ({"num_attention_heads": 0}, "head count must be a positive integer, got 0"),
    ({"num_attention_heads": 5}, "d_model=64 is not divisible by the head count 5"),
])
def test_hf_config_head_count_is_user_error(fields, msg):
    d = tiny_config("llama", d_model=64, n_heads=4, head_dim=16).to_hf_dict()
    del d["head_dim"]
    d.update(fields)
    with pytest.raises(UserError, match=msg):
        ModelConfig.from_hf_dict(d)
    g = tiny_config("gpt2", d_model=64, n_heads=4).to_hf_dict()
    g["n_head"] = fields["num_attention_heads"]
    with pytest.raises(UserError, match=msg):
        ModelConfig.from_hf_dict(g)


def test_corrupt_gguf_is_user_error(tmp_path):
    m = tiny_model("llama", seed=11, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16)
    path = write_gguf(tmp_path / "m.gguf", m, {})
    data = path.read_bytes()
    (tmp_path / "t.gguf").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError, match="GGUF"):
        load_model(tmp_path / "t.gguf")
    (tmp_path / "g.gguf").write_bytes(b"GGUF" + b"\xff" * 100)
    with pytest.raises(UserError, match="GGUF"):
        load_model(tmp_path / "g.gguf")
    (tmp_path / "x.bin").write_bytes(b"hello")
    with pytest.raises(UserError):
        load_model(tmp_path / "x.bin")


# ------------------------------------------------------------------ PyTorch parity
def test_gpt2_matches_transformers_pytorch():
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel

    from pspec_jax.models import params_from_hf_state_dict, to_device

    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=96, n_positions=32, n_embd=48, n_layer=3, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ref = GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # make norms/biases non-trivial so every tensor matters
        for n, p in ref.named_parameters():
            if "ln" in n or "bias" in n:
                p.add_(0.3 * torch.randn_like(p))
    cfg = ModelConfig.from_hf_dict(hf_cfg.to_dict())
    params = to_device(params_from_hf_state_dict(cfg, ref.state_dict()))
    ids = np.random.default_rng(0).integers(0, 96, (2, 20))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got, _ = forward(cfg, params, jnp.asarray(ids, jnp.int32))
    assert np.max(np.abs(want)) > 0.1
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_llama_matches_transformers_pytorch():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from pspec_jax.models import params_from_hf_state_dict, to_device

    torch.manual_seed(1)
    hf_cfg = LlamaConfig(vocab_size=80, hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                         max_position_embeddings=64, rope_theta=500.0, tie_word_embeddings=False,
                         rms_norm_eps=1e-5)
    ref = LlamaForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "norm" in n:
                p.add_(0.3 * torch.randn_like(p))
    cfg = ModelConfig.from_hf_dict(hf_cfg.to_dict())
    assert cfg.n_kv_heads == 2 and cfg.rope_theta == 500.0 and not cfg.tie_embeddings
    params = to_device(params_from_hf_state_dict(cfg, ref.state_dict()))
    ids = np.random.default_rng(1).integers(0, 80, (2, 24))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    got, _ = forward(cfg, params, jnp.asarray(ids, jnp.int32))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
