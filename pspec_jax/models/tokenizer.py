"""Tokenizers: a GGUF's embedded BPE tokenizer rebuilt as a HF fast tokenizer, and
loading/saving/comparing tokenizers of local folders.

GGUF keeps the tokenizer as metadata: `tokenizer.ggml.tokens` (byte-level strings),
`.merges` ("a b" pairs), `.token_type` (1 normal, 3 control, 4 user-defined),
`.bos/eos/unknown/padding_token_id`, `.add_bos_token`, `.pre` (the pre-tokenizer
variant) and `tokenizer.chat_template`. We rebuild exactly the `tokenizers` pipeline
the HF tokenizer.json of the same model uses, so the converted folder tokenises as the
original does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pspec_jax.errors import UserError

# llama.cpp pre-tokenizer names -> the HF pre-tokenizer pipeline (as `tokenizers` objects).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers as pt

    if pre in ("smollm", "starcoder", "refact"):
        # HF SmolLM/StarCoder tokenizer.json: each digit alone, then GPT-2's byte-level regex.
        return pt.Sequence([pt.Digits(individual_digits=True),
                            pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in ("gpt2", "gpt-2", "default", "olmo", "phi-2", "jais"):
        return pt.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe"):
        return pt.Sequence([pt.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                            pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise UserError(f"GGUF tokenizer: unsupported pre-tokenizer {pre!r} "
                    "(supported: smollm, gpt2, llama-bpe)")


def tokenizer_from_gguf_fields(fields: dict[str, Any]):
    """A `transformers.PreTrainedTokenizerFast` from GGUF metadata (a name -> value dict)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    kind = fields.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"GGUF tokenizer: only byte-level BPE ('gpt2') is supported, got {kind!r}")
    tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in fields.get("tokenizer.ggml.merges", [])]
    types = list(fields.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise UserError("GGUF tokenizer: duplicate tokens in the vocabulary")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(str(fields.get("tokenizer.ggml.pre", "gpt2")))
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=(types[i] == 3), normalized=False)
               for i in range(len(tokens)) if types[i] in (3, 4)]
    tok.add_tokens(special)

    def name(key: str) -> str | None:
        i = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    bos = name("bos")
    if fields.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, vocab[bos])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    kw = {k: v for k, v in dict(bos_token=bos, eos_token=name("eos"), unk_token=name("unknown"),
                                pad_token=name("padding")).items() if v is not None}
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=fields.get("tokenizer.chat_template"),
                                   clean_up_tokenization_spaces=False, **kw)


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in a model folder (tokenizer.json [+ tokenizer_config.json])."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / "tokenizer.json").exists() and not (folder / "vocab.json").exists():
        return None
    try:
        if (folder / "tokenizer.json").exists():  # fast path: ~0.3 s (AutoTokenizer: ~1 s more)
            return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # corrupt JSON, wrong fields, ...
        raise UserError(f"cannot load the tokenizer in {folder}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def tokenizer_fingerprint(tok) -> str:
    """A hash of the token -> id map (two tokenizers agree iff they map tokens alike)."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def check_same_tokenizer(private, drafter, private_name: str = "private model",
                         drafter_name: str = "drafter") -> None:
    """Raises UserError unless both tokenizers map every token to the same id."""
    if private is None or drafter is None:
        return
    if tokenizer_fingerprint(private) != tokenizer_fingerprint(drafter):
        raise UserError(f"the {drafter_name} and the {private_name} use different tokenizers "
                        f"({len(drafter)} vs {len(private)} tokens); speculative decoding "
                        "needs one shared vocabulary")
