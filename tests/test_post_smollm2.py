"""POST on the real default pair (SmolLM2-135M-Instruct with the default drafter)."""

import pytest

from pspec_jax.decode import Sampling, generate_plain
from pspec_jax.decode.post import generate_post

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_greedy_post_on_smollm2_equals_greedy_plain(smollm2):
    """Greedy POST (secure argmax per verified row, drafts accepted iff equal to it) emits
    the private model's plain greedy tokens, token for token; the verification stays a
    small part of a step."""
    from pspec_jax.commands.generate import default_drafter

    private, _ = smollm2
    drafter = default_drafter(private)  # the distilled drafter when present, else truncated
    ids = list(private.tokenizer("Once upon a time")["input_ids"])
    n = 8
    plain = generate_plain(private, ids, n, Sampling(0.0))
    res = generate_post(private, drafter, ids, n, 4, Sampling(0.0))
    assert res.tokens == plain.tokens, (private.tokenizer.decode(res.tokens), private.tokenizer.decode(plain.tokens))
    assert res.extra["secure_passes"] == res.steps + 1  # prefill + one pass per step
    assert sum(k + 1 for k in res.accepted_per_step) >= n > sum(k + 1 for k in res.accepted_per_step[:-1])
    assert res.extra["verify_share"]["wan"] < 0.1
