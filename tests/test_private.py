"""The default private model (the server's fine-tune) and the rule that the client's drafter
is built from public weights only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill import export, private


def test_held_out_topics_are_disjoint_and_masks_cover_answers_only():
    train = {k for k, _, _ in private.split_topics("train")}
    held = {k for k, _, _ in private.split_topics("held_out")}
    assert held and train and not train & held
    assert len(held) == len(private.topics()) // private.HELD_OUT_EVERY
    with pytest.raises(ValueError):
        private.split_topics("test")


@pytest.mark.model
def test_examples_train_on_the_answer_only(smollm2):
    tok = smollm2[0].tokenizer
    tokens, mask = private.examples(tok, "held_out", 128)
    assert tokens.shape[1] == 129 and mask.shape == (len(tokens), 128)
    row = 0
    first = int(np.argmax(mask[row]))  # the position that predicts the answer's first token
    prompt = tok.decode(tokens[row, :first + 1])
    assert prompt.endswith("<|im_start|>assistant\n") and "user" in prompt
    # nothing after the end of the turn trains, and the pool's targets are the next tokens
    p = private.pool(tok, "held_out", 128)
    np.testing.assert_array_equal(p.idx[..., 0], tokens[:, 1:])
    assert np.all(p.prob == 1.0) and p.trained_positions == int(mask.sum())
    again, _ = private.examples(tok, "held_out", 128)
    np.testing.assert_array_equal(tokens, again)  # deterministic


@pytest.mark.model
def test_private_model_changes_every_linear_weight_of_the_base(smollm2):
    from pspec_jax.models import load_default_base

    tuned, base = smollm2[0], load_default_base()
    assert tuned.name != base.name and tuned.config == base.config
    np.testing.assert_array_equal(np.asarray(tuned.params["embed"]), np.asarray(base.params["embed"]))
    for i, (a, b) in enumerate(zip(tuned.params["layers"], base.params["layers"])):
        for name in ("q", "k", "v", "o", "gate", "up", "down"):
            diff = np.abs(np.asarray(a[name]["w"]) - np.asarray(b[name]["w"]))
            assert diff.max() > 0, f"layer {i} {name} is the base's"


@pytest.mark.model
def test_shipped_drafter_is_rebuilt_from_the_base_and_its_delta_alone(smollm2, tmp_path, monkeypatch):
    """The client's drafter: the public base + the drafter's own delta, bit-identically,
    whatever the private model is — rebuilding it never loads the private model."""
    import pspec_jax.models as models
    import pspec_jax.models.default as default

    def private_model_loaded(*a, **k):
        raise AssertionError("the drafter's rebuild loaded the private model")

    a = export.materialize(export.SHIPPED, tmp_path / "a")
    # Another private model in place (a different delta, rebuilt), and no way to load one.
    other = tmp_path / "other-private"
    other.mkdir()
    recipe = json.loads((private.SHIPPED / "recipe.json").read_text())
    (other / "recipe.json").write_text(json.dumps(recipe))
    from safetensors.numpy import load_file, save_file

    delta = load_file(str(private.SHIPPED / private.DELTA))
    rng = np.random.default_rng(1)
    save_file({k: (v + rng.normal(0, 0.01, v.shape)).astype(v.dtype) for k, v in delta.items()},
              str(other / private.DELTA))
    base_dir = default.default_model_dir()
    monkeypatch.setenv("PSPEC_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / default.MODEL_DIR).symlink_to(base_dir)  # the same public base
    monkeypatch.setattr(private, "SHIPPED", other)
    private.ensure_built(models.load_default_base(), quiet=True)
    monkeypatch.setattr(default, "load_default_private", private_model_loaded)
    monkeypatch.setattr(models, "load_default_private", private_model_loaded)
    b = export.materialize(export.SHIPPED, tmp_path / "b")
    for f in ("model.safetensors", "config.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert export.read_meta(b)["delta_sha256"] == export.delta_hash(export.SHIPPED)



@pytest.mark.model
def test_private_flag_selects_the_fine_tune_the_base_or_a_folder(smollm2, tiny_folder):
    from pspec_jax.models.default import (BASE_NAME, PRIVATE_NAME, resolve_private,
                                          resolve_private_public)

    assert resolve_private(None).name == resolve_private("DEFAULT").name == PRIVATE_NAME
    assert resolve_private("base").name == BASE_NAME
    # a real run's client: the config and tokenizer, never a weight
    for spec in (None, "base", str(tiny_folder("p", n_layers=1))):
        public = resolve_private_public(spec)
        assert public.params == {} and public.config.n_layers >= 1
    assert resolve_private_public(None).config == smollm2[0].config


@pytest.mark.model
@pytest.mark.slow
def test_private_model_differs_from_the_base_and_knows_its_domain(smollm2):
    """The must-hold, on a third of the held-out prompts (scripts/private_check.py runs all
    24): greedy outputs leave the base's within 16 tokens, and the held-out topics of the
    Python reference cost the fine-tune fewer nats than the base."""
    from distill.prompts import EVAL
    from pspec_jax.models import load_default_base

    tuned, base = smollm2[0], load_default_base()
    rows = private.greedy_divergence(tuned, base, list(EVAL[::3]), 16)
    assert sum(r["first_difference"] is not None for r in rows) >= len(rows) // 2
    loss = [private.domain_loss(m.config, m.params, m.tokenizer, "held_out", limit=32) for m in (tuned, base)]
    assert loss[0] < loss[1] - 0.3, loss
