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
        plain = generate_plain(private, ids, 20, g)
        spec = generate_spec(private, drafter, ids, 20, 4, g)
        assert spec.tokens == plain.tokens, prompt
        assert spec.steps == len(spec.accepted_per_step) and 0 <= spec.alpha <= 1
