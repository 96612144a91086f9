"""End-to-end secure generation on the real default private model (SmolLM2-135M-Instruct)."""

import pytest

from pspec_jax.decode import Sampling, generate_plain
from pspec_jax.decode.secure import generate_secure

pytestmark = pytest.mark.model

PROMPT = "Once upon a time"


def test_secure_greedy_generation_on_smollm2_equals_plain(smollm2):
    """A few tokens of standard secure decoding (prefill + decode passes, secure argmax,
    token opened to the client) give the plain model's greedy tokens."""
    private, _ = smollm2
    ids = list(private.tokenizer(PROMPT)["input_ids"])
    n = 3
    plain = generate_plain(private, ids, n, Sampling(0.0))
    sec = generate_secure(private, ids, n, Sampling(0.0))
    assert sec.tokens == plain.tokens, (private.tokenizer.decode(sec.tokens), private.tokenizer.decode(plain.tokens))
    assert private.tokenizer.decode(sec.tokens).startswith(", the world")  # the private fine-tune's
    # weights were opened once (set-up), and every pass has both parties' traffic
    assert sec.extra["setup"]["bytes_server"] > 8 * 100_000_000
    assert sec.extra["secure_passes"] == n and sec.extra["bytes_per_party"] > 0
