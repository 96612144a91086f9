"""POST on the real default pair (SmolLM2-135M-Instruct with the shipped drafter), through
`pspec demo` — what `make demo` runs."""

import re

import pytest

from pspec_jax.cli import main

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_demo_greedy_post_on_smollm2_equals_greedy_plain(capsys, smollm2):
    """Greedy POST (secure argmax per verified row, drafts accepted iff equal to it) emits
    the private model's plain greedy tokens, token for token (the demo checks and exits 1
    otherwise); one secure pass per step plus the prefill; the verification stays a small
    part of a step's wan time."""
    rc = main(["demo", "--max-new-tokens", "8", "--gamma", "4"])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "Once upon a time" in out and ", the city of Nova Haven" in out
    assert "plain greedy decoding of the private model in the clear gives the same tokens" in out
    steps = int(re.search(r"8 tokens from (\d+) secure verification passes", out).group(1))
    assert 2 <= steps <= 8  # the distilled drafter gets drafts accepted: fewer passes than tokens
    assert re.search(r"secure passes\s+(\d+)", out).group(1) == str(steps + 1)
    assert float(re.search(r"wan (\d+\.\d)%", out).group(1)) < 10.0
