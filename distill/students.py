"""Drafter (student) presets and the split of their params into trained and frozen parts.

A preset is a small frozen dataclass with one method, `build(teacher_config, teacher_params,
key) -> Student`. Names (what `pspec distill --student` takes):

* `trunc{k}` / `trunc{k}-all`: the first k blocks of the teacher with its final norm and
  (tied) head; all k blocks and the final norm train, the embedding (= tied head) stays
  frozen so the drafter keeps sharing the teacher's vocabulary rows.
* `trunc{k}-last{n}`: the same, only the last n blocks and the final norm train.
* `trunc{k}-norms`: only the RMSNorm/LayerNorm scales (and biases) train.
* `keep{spec}[-all|-last{n}|-norms|-lora{r}]`: like `trunc`, but with any increasing subset
  of the teacher's blocks, e.g. `keep0-19.24-29-lora16` = blocks 0..19 and 24..29 (a
  "layer-skipping" drafter in the manner of self-speculative decoding: dropping some middle
  and late blocks keeps the last blocks that map into the head's space, which a plain
  truncation loses). `trunc{k}` is `keep0-{k-1}`.
* `fresh{n}`: a new LLaMA-style decoder of n blocks of the teacher's width, randomly
  initialised, with the teacher's embedding (frozen, tied head) and final norm copied —
  it shares the tokenizer and everything that is not its own blocks.

Params keep the arch.py layout; `Student.trainable` is a pytree of bools of the same
structure; `split` gives the trained leaves as a flat {path: array} dict (what the
optimizer, the gradients and the checkpoints cover) and `merge` puts them back.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pspec_jax.errors import UserError
from pspec_jax.models import arch
from pspec_jax.models.config import ModelConfig

F32 = jnp.float32
Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Student:
    config: ModelConfig
    params: Params
    trainable: Any  # the params' structure with bool leaves
    name: str

    def split(self, params: Params | None = None) -> tuple[dict[str, jax.Array], Params]:
        return split(self.params if params is None else params, self.trainable)


def _mask(params: Params, rule) -> Any:
    """A bool pytree: rule(path_keys) for each leaf."""
    def f(path, _):
        keys = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        return bool(rule(keys))
    return jax.tree_util.tree_map_with_path(f, params)


def split(params: Params, trainable: Any) -> tuple[dict[str, jax.Array], Params]:
    """(trained, base): `trained` maps each trained leaf's path (jax keystr) to its array;
    `base` is the whole params tree (its trained leaves are overridden by `merge`)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    mask = jax.tree_util.tree_leaves(trainable)
    trained = {jax.tree_util.keystr(path): leaf for (path, leaf), t in zip(flat, mask) if t}
    return trained, params


def merge(trained: dict[str, jax.Array], base: Params) -> Params:
    """`base` with the leaves named in `trained` replaced (the inverse of `split`)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: trained.get(jax.tree_util.keystr(path), x), base)


def _copy(params: Params) -> Params:
    # Layers become a list (arch accepts both) and leaves fresh float32 arrays.
    p = dict(params)
    p["layers"] = [params["layers"][i] for i in range(len(params["layers"]))]
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, F32), p)


def parse_blocks(spec: str) -> tuple[int, ...]:
    """'0-19.24-29' -> (0, ..., 19, 24, ..., 29); UserError unless strictly increasing."""
    out: list[int] = []
    for part in spec.split("."):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UserError(f"bad block list {spec!r} (example: 0-19.24-29)")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise UserError(f"bad block range {part!r} in {spec!r}")
        out.extend(range(a, b + 1))
    if any(y <= x for x, y in zip(out, out[1:])):
        raise UserError(f"block list {spec!r} must be strictly increasing")
    return tuple(out)


def blocks_spec(blocks: tuple[int, ...]) -> str:
    """The inverse of parse_blocks: runs of consecutive blocks joined by '.'."""
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return ".".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


@dataclasses.dataclass(frozen=True)
class Truncated:
    """The first `layers` blocks (or the blocks `keep` when given); `train` in {"all",
    "last", "norms", "lora"}; `last` blocks for "last"; `rank` of the low-rank adapters
    for "lora" (with the norms)."""

    layers: int
    train: str = "all"
    last: int = 0
    rank: int = 0
    keep: tuple[int, ...] | None = None

    def build(self, config: ModelConfig, params: Params, key: jax.Array) -> Student:
        if self.keep is None:
            cfg, p = arch.truncate_params(config, params, self.layers)
        else:
            if not self.keep or self.keep[-1] >= config.n_layers:
                raise UserError(f"student preset {self.name}: the teacher has only "
                                f"{config.n_layers} layers (blocks 0..{config.n_layers - 1})")
            cfg, p = arch.keep_blocks(config, params, self.keep)
        p = _copy(p)
        first = self.layers - self.last if self.train == "last" else 0
        if self.train == "lora":
            p["lora"] = init_lora(p, self.rank, key)

        def rule(keys):
            if keys[0] == "lora":
                return True
            if keys[0] == "embed" or keys[0] == "pos_embed":
                return False
            if self.train == "lora":
                return any(k in ("attn_norm", "mlp_norm", "final_norm") for k in keys)
            if keys[0] == "lm_head":
                return self.train != "norms"
            if self.train == "norms":
                return any(k in ("attn_norm", "mlp_norm", "final_norm") for k in keys)
            if keys[0] == "layers":
                return keys[1] >= first
            return True  # final_norm
        return Student(cfg, p, _mask(p, rule), self.name)

    @property
    def name(self) -> str:
        head = f"trunc{self.layers}" if self.keep is None else f"keep{blocks_spec(self.keep)}"
        return head + {"all": "", "norms": "-norms", "lora": f"-lora{self.rank}",
                       "last": f"-last{self.last}"}[self.train]


@dataclasses.dataclass(frozen=True)
class Fresh:
    """`layers` new blocks of the teacher's width (d_ff = `d_ff`, or the teacher's)."""

    layers: int
    d_ff: int = 0
    std: float = 0.02

    def build(self, config: ModelConfig, params: Params, key: jax.Array) -> Student:
        cfg = config.replace(family="llama", n_layers=self.layers,
                             d_ff=self.d_ff or config.d_ff)
        if config.family != "llama":
            raise UserError("the fresh preset builds a LLaMA-style drafter and needs a LLaMA "
                            f"teacher to share its embedding, got {config.family}")
        p = arch.init_params(cfg, key, std=self.std)
        p["embed"] = jnp.asarray(params["embed"], F32)
        p["final_norm"] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, F32), params["final_norm"])
        if not cfg.tie_embeddings:
            p["lm_head"] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, F32), params["lm_head"])
        # Small output projections so each fresh block starts near the identity map and
        # the untrained drafter is "embedding -> teacher head" rather than noise.
        for lp in p["layers"]:
            lp["o"]["w"] = lp["o"]["w"] * F32(0.1)
            lp["down"]["w"] = lp["down"]["w"] * F32(0.1)
        p = _copy(p)
        return Student(cfg, p, _mask(p, lambda keys: keys[0] not in ("embed", "lm_head")), self.name)

    @property
    def name(self) -> str:
        return f"fresh{self.layers}" + (f"-ff{self.d_ff}" if self.d_ff else "")


_PRESET = re.compile(r"^(?:(?:trunc(\d+)|keep(\d+(?:-\d+)?(?:\.\d+(?:-\d+)?)*))"
                     r"(?:-(all|norms|last(\d+)|lora(\d+)))?|fresh(\d+)(?:-ff(\d+))?)$")


def parse_preset(name: str):
    """A preset from its name (see the module docstring); UserError when malformed."""
    m = _PRESET.match(name.strip())
    if not m:
        raise UserError(f"unknown student preset {name!r} (examples: trunc8, trunc8-last2, "
                        "trunc8-norms, trunc8-lora16, keep0-19.24-29-lora16, fresh2, "
                        "fresh2-ff1024)")
    if m.group(1) or m.group(2):
        keep = None
        if m.group(1):
            k = int(m.group(1))
        else:
            keep = parse_blocks(m.group(2))
            k = len(keep)
            if keep == tuple(range(k)):
                keep = None  # keep0-{k-1} is trunc{k}
        mode, last = m.group(3) or "all", m.group(4)
        if k < 1:
            raise UserError(f"student preset {name!r}: needs at least one layer")
        if mode.startswith("last"):
            n = int(last)
            if not 1 <= n <= k:
                raise UserError(f"student preset {name!r}: last{n} must be in [1, {k}]")
            return Truncated(k, "last", n, keep=keep)
        if mode.startswith("lora"):
            r = int(m.group(5))
            if r < 1:
                raise UserError(f"student preset {name!r}: the LoRA rank must be >= 1")
            return Truncated(k, "lora", rank=r, keep=keep)
        return Truncated(k, mode, keep=keep)
    n, ff = int(m.group(6)), int(m.group(7) or 0)
    if n < 1:
        raise UserError(f"student preset {name!r}: needs at least one layer")
    return Fresh(n, ff)


def build_student(preset: str | Any, teacher_config: ModelConfig, teacher_params: Params,
                  seed: int = 0) -> Student:
    preset = parse_preset(preset) if isinstance(preset, str) else preset
    # (a `keep` preset's blocks are checked against the teacher by Truncated.build)
    if isinstance(preset, Truncated) and preset.keep is None and preset.layers > teacher_config.n_layers:
        raise UserError(f"student preset {preset.name}: the teacher has only "
                        f"{teacher_config.n_layers} layers")
    return preset.build(teacher_config, teacher_params, jax.random.PRNGKey(seed))


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down", "fc", "proj")


def init_lora(params: Params, rank: int, key: jax.Array) -> dict[str, Any]:
    """Low-rank adapters W + A·B for every linear of every block (Hu et al. 2021, LoRA):
    A (in, r) ~ N(0, 1/in), B (r, out) = 0, so the untrained student equals the base."""
    lora: dict[str, Any] = {}
    for i in range(len(params["layers"])):
        for name in LORA_TARGETS:
            if name not in params["layers"][i]:
                continue
            w = params["layers"][i][name]["w"]
            key, sub = jax.random.split(key)
            a = jax.random.normal(sub, (w.shape[0], rank), F32) * F32(1.0 / np.sqrt(w.shape[0]))
            lora[f"{i}.{name}"] = {"a": a.astype(F32), "b": jnp.zeros((rank, w.shape[1]), F32)}
    return lora


def effective(params: Params) -> Params:
    """The arch.py params a student computes with: W + A·B where it has LoRA adapters."""
    if "lora" not in params:
        return params
    p = {k: v for k, v in params.items() if k != "lora"}
    layers = [dict(lp) for lp in p["layers"]]
    for key, ab in params["lora"].items():
        i, name = key.split(".")
        lin = dict(layers[int(i)][name])
        lin["w"] = lin["w"] + jnp.einsum("ir,ro->io", ab["a"], ab["b"], preferred_element_type=F32)
        layers[int(i)][name] = lin
    p["layers"] = layers
    return p


def count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))
