"""Shared fixtures: the default SmolLM2 pair (fetched on first use) and tiny tokenizers."""

from __future__ import annotations

import os

import pytest

import pspec_jax  # noqa: F401  (enables x64 before any jax use)

# The CLI persists XLA compilations in $PSPEC_HOME/jax-cache; tests stay hermetic.
os.environ.setdefault("PSPEC_NO_JIT_CACHE", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for `pytest -n 2 --dist loadgroup` (`make test`): a file's tests run in one
    worker, where they share compiled programs (unless the file sets XDIST_SPREAD: then
    each test goes where a worker is free); every test on the real SmolLM2 model runs
    in one worker, one after another (each holds several GB: two side by side have run
    this 24 GB machine out of memory)."""
    for item in items:
        if getattr(item.module, "XDIST_SPREAD", False):
            continue  # its tests run party processes of their own: nothing to share in-process
        if item.get_closest_marker("xdist_group") is None:
            group = "smollm2" if item.get_closest_marker("model") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def smollm2():
    """(private, drafter) default bundles; downloads and converts on first use."""
    from pspec_jax.models import load_default_pair

    return load_default_pair()


def byte_tokenizer(merges: list[tuple[str, str]] = (("Ġ", "t"), ("h", "e"), ("Ġt", "he")),
                   shuffle_seed: int | None = None):
    """A tiny byte-level BPE `PreTrainedTokenizerFast`: 256 byte tokens, the given merges,
    then "<eos>". `shuffle_seed` permutes the ids (a *different* tokenizer, same size)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    toks = alphabet + ["".join(m) for m in merges] + ["<eos>"]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(toks)
    vocab = {t: i for i, t in enumerate(toks)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    return tok


@pytest.fixture
def tiny_folder(tmp_path):
    """Factory: saves a tiny random model (+ byte tokenizer) as a HF folder, returns its path."""
    from pspec_jax.models import tiny_model

    def make(name="tiny", family="llama", seed=0, tokenizer=True, shuffle_seed=None, **cfg):
        cfg.setdefault("vocab_size", 264)
        m = tiny_model(family, seed=seed, **cfg)
        tok = byte_tokenizer(shuffle_seed=shuffle_seed) if tokenizer else None
        path = tmp_path / name
        m.__class__(m.config, m.params, tok, name).save(path)
        return path

    return make
