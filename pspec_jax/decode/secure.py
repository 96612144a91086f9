"""Standard secure decoding: one secure pass of the private model per generated token.

The baseline every speed-up is measured against. The client's prompt enters as shared
one-hot rows; a prefill pass fills the shared KV cache; then each step runs one secure
pass over the last token, and the next token is chosen inside MPC — greedy: secure
argmax; sampling: temperature, then inverse-transform sampling with randomness both
parties contribute to — and opened to the client only. The server learns the number of
passes (the output length) and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

import mpc
from pspec_jax.decode.common import GenerationResult, OnTokens, check_ids
from pspec_jax.decode.costs import CostReport
from pspec_jax.decode.sampling import Sampling
from pspec_jax.errors import UserError


def check_secure_sampling(sampling: Sampling) -> None:
    """Top-k / top-p would need a secure sort of the vocabulary: not offered."""
    if sampling.top_k or sampling.top_p < 1.0:
        raise UserError("secure modes support temperature sampling and greedy only (no --top-k/--top-p)")


def check_temperature(session, sampling: Sampling) -> None:
    """A sampled run's temperature must not go below the private model's bound (its
    calibrated logit spread over the comparisons' ranges, `sampling.min_temperature`)."""
    from mpc.protocols.sampling import min_temperature

    if sampling.greedy:
        return
    bound = min_temperature(session.ctx.config.nonlinear, session.config.vocab_size)
    if sampling.temperature < bound:
        raise UserError(f"--temperature {sampling.temperature:g} is below this model's lower bound {bound:.3g} "
                        "(its logits spread too wide for the secure sampler); use a higher temperature "
                        "or --temperature 0 (greedy)")


def secure_next_token(session, logits, sampling: Sampling, op: str = "next_token") -> int:
    """The next token from shared logits (1, 1, V), chosen inside MPC and opened to the
    client only: argmax when greedy, else a sample of softmax(logits / T)."""
    return session.next_token(logits, 0.0 if sampling.greedy else sampling.temperature, op=op)


def generate_secure(private, prompt_ids: list[int], max_new_tokens: int = 32,
                    sampling: Sampling = Sampling(), eos_id: int | None = None,
                    on_tokens: OnTokens | None = None, mpc_config: mpc.MPCConfig | None = None,
                    dealer_seed: bytes | None = None, session=None) -> GenerationResult:
    """Standard secure decoding of `private` (a ModelBundle). Returns a GenerationResult
    whose `extra` holds the cost figures (prefill, decode, total) and the ledger.

    Every mask comes from os.urandom-keyed AES streams; `dealer_seed` fixes them for
    reproducible tests and must not be used in a real run. Sampling randomness comes from
    both parties inside MPC, so no client seed can reproduce a sampled run. `session`: an
    existing SecureSession of this model to reuse (its cache is reset; saves compilation).
    """
    from pspec_jax.secure import SecureSession

    check_secure_sampling(sampling)
    prompt_ids = check_ids(prompt_ids, private.config)
    ctx_len = private.config.max_seq_len
    if len(prompt_ids) + 1 > ctx_len:
        raise UserError(f"the prompt has {len(prompt_ids)} tokens; it does not fit the context of {ctx_len}")
    max_new = min(max_new_tokens, ctx_len - len(prompt_ids))

    if session is None:
        session = SecureSession(private.config, private.params, max_len=len(prompt_ids) + max_new,
                                mpc_config=mpc_config, seed=dealer_seed,
                                tokenizer=private.tokenizer)
    elif session.max_len < len(prompt_ids) + max_new:
        raise UserError(f"the session's cache holds {session.max_len} tokens, the run needs {len(prompt_ids) + max_new}")
    check_temperature(session, sampling)
    session.rollback(0)
    ledger = session.ledger
    setup_mark = ledger.snapshot()
    t0 = time.perf_counter()
    with ledger.scope("prefill"):
        logits = session.forward(prompt_ids, logits_last_only=True)
        token = secure_next_token(session, logits, sampling)
    prefill_compute = time.perf_counter() - t0
    decode_mark = ledger.snapshot()
    out = [token]
    if on_tokens:
        on_tokens([token])
    stop = "eos" if token == eos_id else ("length" if max_new == max_new_tokens else "context")
    t1 = time.perf_counter()
    first_step_s = 0.0
    while len(out) < max_new and stop != "eos":
        with ledger.scope("decode"):
            logits = session.forward([token], logits_last_only=True)
            token = secure_next_token(session, logits, sampling)
        if len(out) == 1:  # the first decode step compiles the one-token pass
            first_step_s = time.perf_counter() - t1
        out.append(token)
        if on_tokens:
            on_tokens([token])
        if token == eos_id:
            stop = "eos"
    decode_compute = time.perf_counter() - t1
    prefill = CostReport.of(ledger_slice(ledger, setup_mark, decode_mark), prefill_compute, 1)
    decode = CostReport.of(ledger.since(decode_mark), decode_compute, len(out) - 1)
    total = CostReport.of(ledger.since(setup_mark), prefill_compute + decode_compute, len(out))
    extra: dict[str, Any] = {
        **total.to_json(tokens=len(out)), "prefill": prefill.to_json(),
        "decode": decode.to_json(tokens=max(1, len(out) - 1)),
        "setup": {"bytes_server": ledger.totals("setup").bytes1, "seconds": round(session.setup_s, 3)},
        "compile_seconds": round(session.ctx.compile_seconds, 3),  # this process's programs
    }
    res = GenerationResult(mode="secure", tokens=out, steps=len(out), accepted_per_step=[], alpha_per_step=[],
                           seconds=decode_compute, prefill_seconds=prefill_compute, first_step_seconds=first_step_s,
                           first_step_tokens=min(2, len(out)),  # the prefill's token and the first step's
                           stop_reason=stop, extra=extra)
    res.extra["_ledger"] = ledger  # removed by the CLI before printing
    res.extra["_ranges"] = session.calibration()  # shown by --profile (removed by the CLI)
    return res


def ledger_slice(ledger: mpc.Ledger, start: int, end: int) -> mpc.Ledger:
    sub = mpc.Ledger()
    sub.entries = ledger.entries[start:end]
    return sub
