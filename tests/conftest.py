"""Shared fixtures: the default SmolLM2 pair (fetched on first use) and tiny tokenizers;
and the in-process `pspec` runner the CLI tests share (`from conftest import run_cli`)."""

from __future__ import annotations

import os

import pytest

import pspec_jax  # noqa: F401  (enables x64 before any jax use)

# The CLI persists XLA compilations in $PSPEC_HOME/jax-cache; tests stay hermetic.
os.environ.setdefault("PSPEC_NO_JIT_CACHE", "1")


# How `make test` spreads tests over its pytest-xdist workers (`-n 2`): a file's tests run
# in one worker, where they share compiled programs; the files below share one worker
# (each holds several GB of SmolLM2: two side by side have run this 24 GB machine out of
# memory); a file in SPREAD runs its own party processes, so its tests go where a worker
# is free. (xdist's own `--dist loadgroup` did not group here: pytest 9.2, xdist 3.8.)
ONE_WORKER = frozenset(f"tests/test_{name}.py" for name in (
    "post_smollm2", "secure_fidelity", "secure_smollm2", "wide_models", "models_smollm2", "spec_smollm2",
    "distill_smollm2", "private"))
SPREAD = frozenset({"tests/test_runtime.py"})


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "smollm2" if path in ONE_WORKER else nodeid if path in SPREAD else path

    return Scheduling(config, log)


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of `pspec *argv` run in this process."""
    from pspec_jax.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err):
    """The CLI's answer to bad input: exit 2 and one line "pspec: error: ..." (no traceback)."""
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pspec: error: "), err
    assert "Traceback" not in err


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
