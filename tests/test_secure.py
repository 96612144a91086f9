"""The secure forward and standard secure decoding against the plain models.

Compilation dominates these tests on a 2-core machine, so one session per family is
shared and every pass uses T = 3 (prompt) or T = 1 (a decoding step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pspec_jax.decode import Sampling, generate_plain
from pspec_jax.decode.secure import generate_secure
from pspec_jax.models import arch, tiny_model
from pspec_jax.secure import SecureSession

IDS = jnp.array([[3, 7, 1, 9, 4]], jnp.int32)


@pytest.fixture(scope="module", params=["llama", pytest.param("gpt2", marks=pytest.mark.slow)])
def model_and_session(request):
    b = tiny_model(request.param, seed=3)
    return b, SecureSession(b.config, b.params, max_len=8, seed=b"secure-tests")


def test_secure_forward_matches_plain_with_cache_and_rollback(model_and_session):
    b, sess = model_and_session
    ref = np.asarray(arch.forward(b.config, b.params, IDS)[0])
    sess.rollback(0)
    parts = [sess.reveal_logits(sess.forward(IDS[:, :3]))]
    parts += [sess.reveal_logits(sess.forward(IDS[:, t:t + 1])) for t in (3, 4)]
    got = np.concatenate(parts, axis=1)
    assert np.abs(got - ref).max() < 0.02, np.abs(got - ref).max()
    sess.rollback(3)  # the same token again after a rollback gives the same logits
    assert np.abs(sess.reveal_logits(sess.forward(IDS[:, 3:4])) - parts[1]).max() < 0.02
    with pytest.raises(ValueError):
        sess.rollback(5)


def _client_linear_elements(config, T: int) -> int:
    """Σ m·k over the pass's products with server weights (the client's masked inputs,
    8 bytes each; layers sharing an input count once): embedding one-hot rows, per layer
    q/k/v, o, (gate/up | fc), (down | proj), the final norm scale, head. The blocks' norm
    scales are folded into q/k/v and gate/up | fc (`arch.fold_norm_scales`): no product."""
    d, F, V = config.d_model, config.d_ff, config.vocab_size
    per_layer = T * d + T * config.n_heads * config.head_dim + T * d + T * F
    pos = T * config.max_seq_len if config.family == "gpt2" else 0  # one-hot positions
    return T * V + pos + config.n_layers * per_layer + T * d + T * d


def test_weight_bytes_of_a_step_equal_the_formula(model_and_session):
    b, sess = model_and_session
    folded = arch.fold_norm_scales(b.config, b.params)  # what the server prepares
    n_weights = sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(folded)
                    if str(path[-1]) not in ("['b']", "['bias']"))
    assert sess.ledger.totals("setup").bytes1 == 8 * n_weights  # each weight opened once, masked
    for T, chunk in ((3, IDS[:, :3]), (1, IDS[:, 3:4])):
        sess.rollback(0 if T == 3 else 3)
        mark = sess.ledger.snapshot()
        sess.forward(chunk)
        client_only = sum(e.bytes0 for e in sess.ledger.since(mark).entries
                          if e.kind == "online" and e.bytes1 == 0)
        assert client_only == 8 * _client_linear_elements(b.config, T)
    assert sess.ledger.totals("setup").bytes1 == 8 * n_weights  # never reopened


def test_secure_greedy_decoding_equals_plain(model_and_session):
    b, sess = model_and_session
    prompt = [5, 9, 2]
    plain = generate_plain(b, prompt, 3, Sampling(0.0))
    sec = generate_secure(b, prompt, 3, Sampling(0.0), session=sess)
    assert sec.tokens == plain.tokens
    assert sec.extra["secure_passes"] == 3 and sec.extra["rounds"] > 0
    assert set(sec.extra["modeled_s"]) == {"lan", "wan", "dc"}


def _traced_rounds(ctx, fn, *shapes):
    """Online rounds of fn(ctx, *shared inputs) from tracing alone (nothing runs)."""
    from mpc.shares import Shared

    with ctx.ledger.capture() as entries:
        jax.jit(lambda *v: fn(ctx, *[Shared(a, ctx.config.frac_bits) for a in v])).lower(
            *[jax.ShapeDtypeStruct((2, *s), jnp.uint64) for s in shapes])
    return sum(e.rounds for e in entries if e.kind == "online")


def test_a_block_costs_the_rounds_of_its_protocols(model_and_session):
    """A decoding step's rounds per block = the sum of its protocols' rounds: norms without
    their scales (folded), q/k/v in one linear (2), q and k in one RoPE truncation (1),
    attention (QKᵀ 1 with the new rows' masking riding along, softmax with the scores'
    truncation riding on its first exp round, PV 1 + truncation 1), o (2), the
    MLP's linears (2 each; gate/up together) and its activation (SiLU × up: + 2)."""
    from mpc.protocols import nonlinear as NL
    from mpc.protocols import norm
    from mpc.protocols.softmax import softmax

    b, sess = model_and_session
    c, ctx = b.config, sess.ctx
    sess.rollback(0)
    sess.forward(IDS[:, :3])
    mark = sess.ledger.snapshot()
    sess.forward(IDS[:, 3:4])
    per_block = [sum(e.rounds for e in sess.ledger.since(mark).entries
                     if e.kind == "online" and e.op.startswith(f"layer{i}/")) for i in range(c.n_layers)]
    d, S, G = c.d_model, sess.max_len, c.n_heads // c.n_kv_heads
    scores = (1, c.n_kv_heads, G, S)
    f = ctx.config.frac_bits
    attention = 1 + _traced_rounds(  # the scores reach the softmax untruncated (scale 3f)
        ctx, lambda ctx, x: softmax(ctx, x.with_frac(3 * f), mask=np.ones(scores[-2:], bool), x_trunc=2 * f),
        scores) + 2
    if c.family == "llama":
        normed = _traced_rounds(ctx, lambda ctx, x: norm.rmsnorm(ctx, x, None, c.norm_eps), (1, 1, d))
        mlp = 2 + _traced_rounds(ctx, NL.silu, (1, 1, c.d_ff)) + 2 + 2
        rope = 1
    else:
        normed = _traced_rounds(ctx, lambda ctx, x: norm.layernorm(ctx, x, None, None, c.norm_eps), (1, 1, d))
        mlp = 2 + _traced_rounds(ctx, NL.gelu, (1, 1, c.d_ff)) + 2
        rope = 0
    expected = 2 * normed + 2 + rope + attention + 2 + mlp
    assert per_block == [expected] * c.n_layers, (per_block, expected)
