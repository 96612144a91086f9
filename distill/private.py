"""The default private model: the server's own fine-tune of the public base.

SmolLM2-135M-Instruct (the public base, `pspec_jax.models.default`) fine-tuned into a
Python reference assistant: low-rank adapters of rank `RANK` on every linear layer of
every block (q, k, v, o, gate, up, down) and all RMSNorm scales, trained on chat turns
whose answers are the Python Language Reference's topics — the text of `pydoc_data.topics`,
which ships with every CPython 3.11 (no download; PSF licence). The embedding (= tied head)
stays the base's. After merging, every linear weight of every block differs from the base.

Data: each topic is cut into paragraph groups of at most `ANSWER_TOKENS` tokens; each group
is the assistant's answer to a question about the topic's heading ("Explain the "with"
statement in Python."), through the chat template; only the answer's tokens (and its
end-of-turn) train, by cross-entropy (forward KL to a one-hot target). Every 8th topic
(`held_out`) is never trained on: it measures the fine-tune's loss on its domain.

What the repository ships (`SHIPPED`): the trained leaves (LoRA factors + norm scales,
float16, ~5 MB) and the recipe; `build_private` rebuilds the full model from them and the
base (deterministic: W + A·B in float32 as in training), `scripts/make_private.py` trains
it again from the recipe.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from distill.data import Pool
from distill.export import DELTA  # noqa: F401  (the trained leaves' file name)

RANK = 8
PRESET = f"trunc30-lora{RANK}"  # all 30 blocks of the base, LoRA on every linear
SHIPPED = Path(__file__).resolve().parent / "private" / "pydoc"
ANSWER_TOKENS = 96
HELD_OUT_EVERY = 8  # topics i with i % 8 == 7 are held out
QUESTIONS = (
    "Explain {h} in Python.",
    "What does the Python reference say about {h}?",
    "Tell me about {h}.",
    "How does {h} work in Python?",
)


def topics() -> list[tuple[str, str, str]]:
    """(key, heading, text) of every topic of the Python reference, sorted by key."""
    import pydoc_data.topics as t

    out = []
    for key in sorted(t.topics):
        text = t.topics[key].strip()
        heading = text.splitlines()[0].strip() if text else key
        out.append((key, heading, text))
    return out


def split_topics(split: str) -> list[tuple[str, str, str]]:
    """'train' or 'held_out' topics (every HELD_OUT_EVERY-th topic is held out)."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    keep_held = split == "held_out"
    return [t for i, t in enumerate(topics()) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == keep_held]


def _answers(tokenizer, text: str) -> list[list[int]]:
    """The topic's body (heading and its underline dropped) in groups of whole paragraphs of
    at most ANSWER_TOKENS tokens (a longer paragraph is cut into ANSWER_TOKENS pieces)."""
    lines = text.splitlines()
    body = "\n".join(lines[2:] if len(lines) > 1 and set(lines[1].strip()) <= set("*=-") else lines[1:])
    groups: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for para in (p.strip("\n") for p in body.split("\n\n")):
        if not para.strip():
            continue
        n = len(tokenizer.encode(para + "\n\n"))
        if cur and size + n > ANSWER_TOKENS:
            groups.append(cur)
            cur, size = [], 0
        cur.append(para)
        size += n
    if cur:
        groups.append(cur)
    out: list[list[int]] = []
    for g in groups:  # a paragraph longer than ANSWER_TOKENS is cut into pieces
        ids = tokenizer.encode("\n\n".join(g))
        out.extend(ids[i:i + ANSWER_TOKENS] for i in range(0, len(ids), ANSWER_TOKENS))
    return out


def examples(tokenizer, split: str, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Chat turns of a split: tokens (N, seq_len + 1) int32 and mask (N, seq_len) bool (True
    where position t predicts an answer token or the end of the turn). Padded with EOS."""
    from distill.prompts import format_prompt

    eos = int(tokenizer.eos_token_id)
    end = tokenizer.encode("<|im_end|>")  # the end of an assistant turn (SmolLM2's template)
    rows, masks = [], []
    for j, (key, heading, text) in enumerate(split_topics(split)):
        for g, answer in enumerate(_answers(tokenizer, text)):
            question = QUESTIONS[(j + g) % len(QUESTIONS)].format(h=heading)
            prompt = format_prompt(tokenizer, question)
            ids = (prompt + answer + end)[:seq_len + 1]
            row = np.full(seq_len + 1, eos, np.int32)
            row[:len(ids)] = ids
            mask = np.zeros(seq_len, bool)
            mask[len(prompt) - 1:len(ids) - 1] = True
            rows.append(row)
            masks.append(mask)
    return np.stack(rows), np.stack(masks)


def pool(tokenizer, split: str, seq_len: int) -> Pool:
    """The split as a training Pool with one-hot targets (k = 1, prob 1): forward KL to it is
    the cross-entropy of the next token."""
    tokens, mask = examples(tokenizer, split, seq_len)
    idx = tokens[:, 1:, None].astype(np.int32)
    return Pool(tokens, idx, np.ones(idx.shape, np.float32), mask)


def domain_loss(config, params, tokenizer, split: str = "held_out", seq_len: int = 128,
                batch: int = 8, limit: int | None = None) -> float:
    """Mean cross-entropy (nats per answer token) of a model on a split's answers (the
    first `limit` of them when given)."""
    import jax
    import jax.numpy as jnp

    from pspec_jax.models import arch

    p = pool(tokenizer, split, seq_len)
    if limit is not None:
        p = Pool(p.tokens[:limit], p.idx[:limit], p.prob[:limit], p.mask[:limit])

    @jax.jit
    def nll(inputs, targets, mask):
        logits, _ = arch.forward(config, params, inputs)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        tok = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
        return -jnp.sum(tok * mask), jnp.sum(mask)

    tot = cnt = 0.0
    for s in range(0, len(p), batch):
        rows = np.arange(s, min(s + batch, len(p)))
        rows = np.concatenate([rows, np.full(batch - len(rows), rows[0])])  # one shape
        m = p.mask[rows].astype(np.float32)
        m[len(range(s, min(s + batch, len(p)))):] = 0
        a, b = nll(jnp.asarray(p.tokens[rows, :-1]), jnp.asarray(p.tokens[rows, 1:]), jnp.asarray(m))
        tot += float(a)
        cnt += float(b)
    return tot / max(cnt, 1.0)


def greedy_divergence(private, base, prompts: list[str], tokens: int = 16,
                      eos_id: int | None = None) -> list[dict]:
    """Per prompt: both models' greedy continuations (chat template) of `tokens` tokens (to
    the first `eos_id` when given) and the first position where they differ (None: never;
    a continuation that ends first differs where the other goes on)."""
    from distill.prompts import format_prompt
    from pspec_jax.decode import Sampling, generate_plain

    rows = []
    for text in prompts:
        ids = format_prompt(base.tokenizer, text)
        a, b = (generate_plain(m, ids, tokens, Sampling(0.0), seed=0, eos_id=eos_id).tokens
                for m in (private, base))
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y),
                     None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"prompt": text, "first_difference": first,
                     "private": private.tokenizer.decode(a), "base": base.tokenizer.decode(b)})
    return rows


def built_dir() -> Path | None:
    """The fine-tune's folder in $PSPEC_HOME when it is built from the shipped delta, else None."""
    import json

    from distill import export
    from pspec_jax.errors import UserError
    from pspec_jax.models.default import PRIVATE_NAME, pspec_home

    if not (SHIPPED / DELTA).exists():
        raise UserError(f"the private model's delta {SHIPPED / DELTA} is missing from this checkout")
    target = pspec_home() / PRIVATE_NAME
    try:
        meta = json.loads((target / "pspec.json").read_text())
    except (OSError, ValueError):
        return None
    return target if meta.get("delta_sha256") == export.delta_hash(SHIPPED) else None


def ensure_built(base, quiet: bool = False) -> Path:
    """The fine-tune's HF folder in $PSPEC_HOME, rebuilt from `base` + SHIPPED when missing
    or made from another delta (its pspec.json records the delta's sha256)."""
    import json

    from distill import export
    from pspec_jax.models.default import PRIVATE_NAME, fetch_lock, pspec_home, write_model_folder

    target = built_dir()
    if target is not None:
        return target
    target = pspec_home() / PRIVATE_NAME
    want = export.delta_hash(SHIPPED)
    with fetch_lock(pspec_home()):
        if built_dir() is not None:  # another process built it while this one waited
            return target
        if not quiet:
            log(f"building the private model (the base + {SHIPPED / DELTA}) into {target}")
        recipe = json.loads((SHIPPED / "recipe.json").read_text())
        config, params = export.rebuild(base, recipe["preset"], int(recipe.get("seed", 0)),
                                        SHIPPED / DELTA)
        write_model_folder(target, config, params, base.tokenizer,
                           {"base": base.name, "delta_sha256": want, "recipe": recipe})
    return target


def log(msg: str) -> None:
    print(f"pspec private: {msg}", file=sys.stderr, flush=True)
