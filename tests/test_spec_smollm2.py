"""Speculative decoding on the default pair (SmolLM2-135M-Instruct and its truncation)."""

from __future__ import annotations

import pytest

from pspec_jax.decode import Sampling, generate_plain, generate_spec

pytestmark = pytest.mark.model


def test_greedy_spec_equals_greedy_plain_on_smollm2(smollm2):
    private, drafter = smollm2
    tok = private.tokenizer
    g = Sampling(0.0)
    for prompt in ["Once upon a time", "The three primary colors are"]:
        ids = tok(prompt)["input_ids"]
        plain = generate_plain(private, ids, 24, g)
        spec = generate_spec(private, drafter, ids, 24, 4, g)
        assert spec.tokens == plain.tokens, prompt
        assert spec.steps == len(spec.accepted_per_step) and 0 <= spec.alpha <= 1


def test_self_drafting_smollm2_accepts_all(smollm2):
    """With the private model as its own drafter every draft passes (α = 1): exercises the
    all-accepted path (two pending drafter tokens) on the real model."""
    private, _ = smollm2
    ids = private.tokenizer("Once upon a time")["input_ids"]
    r = generate_spec(private, private, ids, 10, 4, Sampling(0.0))
    assert r.accepted_per_step[0] == 4 and r.alpha > 0.999
    assert private.tokenizer.decode(r.tokens) == ", the city of Nova Haven was a thriving metropolis"
