"""The default models: the public base SmolLM2-135M-Instruct (fetched on first use) and the
private fine-tune built from it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from pspec_jax.decode import Sampling, generate_plain
from pspec_jax.models.config import smollm2_135m_config
from pspec_jax.models.tokenizer import tokenizer_fingerprint

pytestmark = pytest.mark.model

REFERENCE = ", the city of Nova Haven was a thriving metropolis"


def test_default_model_config_and_tokenizer(smollm2):
    private, drafter = smollm2
    c = private.config
    assert (c.family, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff,
            c.vocab_size, c.rope_theta, c.tie_embeddings) == (
        "llama", 30, 576, 9, 3, 64, 1536, 49152, 100000.0, True)
    shape = ("family", "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
             "rope_theta", "tie_embeddings")
    ref = smollm2_135m_config()  # the random-weight stand-in of scripts/gpu_check.py
    assert all(getattr(c, k) == getattr(ref, k) for k in shape)
    # the drafter (from the public base) and the private fine-tune share one vocabulary
    assert drafter.config.n_layers < c.n_layers
    assert tokenizer_fingerprint(drafter.tokenizer) == tokenizer_fingerprint(private.tokenizer)
    tok = private.tokenizer
    # No BOS: the GGUF says add_bos_token=false (as the HF tokenizer does); these ids are
    # what reproduces the reference continuation.
    assert tok("Once upon a time")["input_ids"] == [6403, 1980, 253, 655]
    assert tok("12 apples")["input_ids"][:2] == [33, 34]  # digits split one by one (smollm)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(chat, add_special_tokens=False)["input_ids"]
    assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|>, <|im_end|> are single tokens


def test_greedy_continuation_matches_reference():
    from pspec_jax.models import load_default_base

    base = load_default_base()
    tok = base.tokenizer
    r = generate_plain(base, tok("Once upon a time")["input_ids"], 10, Sampling(0.0))
    assert tok.decode(r.tokens) == REFERENCE


def test_converted_folders_match_transformers_pytorch(smollm2):
    """The converted base and the built private model are valid HF checkpoints: PyTorch's
    LlamaForCausalLM on each gives our logits (and, on the base, the same greedy
    continuation)."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaForCausalLM

    from pspec_jax.models import forward, load_default_base
    from pspec_jax.models.default import PRIVATE_NAME, default_model_dir, pspec_home

    for model, folder in ((load_default_base(), default_model_dir()), (smollm2[0], pspec_home() / PRIVATE_NAME)):
        ids = model.tokenizer("Once upon a time, the city of Nova Haven was")["input_ids"]
        ref = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        with torch.no_grad():
            want = ref(torch.tensor([ids])).logits.numpy()
            gen = ref.generate(torch.tensor([ids[:4]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                               max_new_tokens=10, do_sample=False)
        if folder == default_model_dir():
            assert model.tokenizer.decode(gen[0, 4:]) == REFERENCE
        got, _ = forward(model.config, model.params, jnp.asarray([ids], jnp.int32))
        err = float(np.max(np.abs(np.asarray(got) - want)))
        assert err < 2e-3, (folder, err)
        assert (np.argmax(np.asarray(got), -1) == np.argmax(want, -1)).all()
