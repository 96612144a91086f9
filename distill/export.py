"""The drafter on disk: a Hugging Face folder that `load_model(DIR)` (and so
`pspec generate --public DIR`) loads like any other model.

`pspec distill --out DIR` writes DIR/config.json + DIR/model.safetensors (float32, HF
LLaMA/GPT-2 names: the student's blocks, its final norm and the shared embedding/head)
+ the private model's tokenizer files, and DIR/pspec_drafter.json with the recipe
(command, seed, preset, loss, data, tokens) and α before/after. Checkpoints of the run
live in DIR/ckpt (Orbax) and can be deleted once the run is done.

`default_drafter()` is the drafter the demo uses: the distilled one at
`$PSPEC_HOME/drafters/default` when present (built on first use from the public base and
the small delta shipped in `distill/drafters/default/`, and rebuilt when that delta
changes), else the base's untrained truncation (with a one-line hint naming the command
that makes the aligned one). The client holds public weights only: a drafter is always
built over the public base (`--base`; for the default pair), never over the private model
it imitates; what it learns of the private model comes from that model's outputs (the
distillation data).
Small students (LoRA presets) also get DIR/trained.safetensors: only their trained
leaves (float32, or float16 when float32 would exceed DELTA_LIMIT), from which
`materialize` rebuilds the full folder over the public base.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distill.data import pspec_home

META = "pspec_drafter.json"
DELTA = "trained.safetensors"
DELTA_LIMIT = 8 * 2**20  # bytes: float32 up to this size, else float16 (what goes into git)
# A drafter shipped in the repository as trained leaves only (LoRA factors + norms).
SHIPPED = Path(__file__).resolve().parent / "drafters" / "default"
DEFAULT_NAME = "default"
# The recipe of the default drafter (README; scripts/distill_table.py records measured runs).
DEFAULT_COMMAND = ("pspec distill --teacher DEFAULT --student trunc30-lora8 --loss tv --data teacher "
                   "--tokens 100000 --lr 3e-3 --warmup 10 --seed 0 --time-limit 35 "
                   "--out $PSPEC_HOME/drafters/default")


def default_drafter_dir() -> Path:
    return pspec_home() / "drafters" / DEFAULT_NAME


def save_drafter(out: str | Path, config, params, tokenizer, meta: dict[str, Any],
                 trained: dict[str, Any] | None = None) -> Path:
    """Writes the HF folder; with `trained` (the student's trained leaves by path) small
    enough to keep in git (≤ DELTA_LIMIT bytes), also DIR/trained.safetensors, from which
    `materialize` rebuilds the folder over the same public base."""
    import numpy as np

    from pspec_jax.models.loaders import save_hf_folder

    out = Path(out)
    save_hf_folder(out, config, params, tokenizer)
    if trained is not None:
        # float32 when it fits, else float16 (LoRA factors and norm scales lose nothing that
        # matters to α at half precision; `materialize` computes in float32 again).
        f32_bytes = sum(int(np.size(v)) for v in trained.values()) * 4
        dtype = np.float32 if f32_bytes <= DELTA_LIMIT else np.float16 if f32_bytes // 2 <= DELTA_LIMIT else None
        if dtype is not None:
            save_trained(out / DELTA, trained, dtype, {"student": str(meta.get("student"))})
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def save_trained(path: str | Path, trained: dict[str, Any], dtype, metadata: dict[str, str]) -> Path:
    """Trained leaves by path as safetensors in `dtype` (what the repository ships)."""
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32).astype(dtype)) for k, v in trained.items()}
    save_file(arrays, str(path), metadata={**metadata, "dtype": np.dtype(dtype).name})
    return Path(path)


def rebuild(base, preset: str, seed: int, delta_file: str | Path):
    """(config, params) of the student `preset` built over `base` (a ModelBundle) with its
    trained leaves read from `delta_file`: a pure function of the two (W + A·B in float32)."""
    import numpy as np
    from safetensors.numpy import load_file

    from distill import students
    from pspec_jax.errors import UserError

    st = students.build_student(preset, base.config, base.params, seed=seed)
    trained, tree = st.split()
    got = load_file(str(delta_file))
    if set(got) != set(trained):
        raise UserError(f"{delta_file} does not match the preset {preset}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(trained[k].shape):
            raise UserError(f"{delta_file}: {k} has shape {v.shape}, expected {trained[k].shape}")
    return st.config, students.effective(students.merge(
        {k: np.asarray(v, np.float32) for k, v in got.items()}, tree))


def materialize(delta_dir: str | Path, out: str | Path) -> Path:
    """Rebuilds a drafter folder from DIR/trained.safetensors + DIR/pspec_drafter.json and
    the public base model alone (never the private model: the client holds only these)."""
    from pspec_jax.errors import UserError
    from pspec_jax.models import load_default_base

    delta_dir = Path(delta_dir)
    meta = read_meta(delta_dir)
    if meta is None or not (delta_dir / DELTA).exists():
        raise UserError(f"{delta_dir} holds no {DELTA} + {META}")
    if str(meta.get("base", "DEFAULT")).upper() != "DEFAULT":
        raise UserError(f"{delta_dir}: only drafters built on the DEFAULT base can be rebuilt")
    base = load_default_base()
    config, params = rebuild(base, meta["student"], int(meta.get("seed", 0)), delta_dir / DELTA)
    meta = {**meta, "delta_sha256": delta_hash(delta_dir)}
    stale = Path(out) / DELTA  # an older run's delta would not match the rebuilt folder
    if stale.exists() and stale.resolve() != (delta_dir / DELTA).resolve():
        stale.unlink()
    return save_drafter(out, config, params, base.tokenizer, meta)


def delta_hash(delta_dir: str | Path) -> str:
    """sha256 of DIR/trained.safetensors: which shipped delta a rebuilt folder came from."""
    import hashlib

    return hashlib.sha256((Path(delta_dir) / DELTA).read_bytes()).hexdigest()


def read_meta(path: str | Path) -> dict[str, Any] | None:
    f = Path(path) / META
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def default_drafter_stages(quiet: bool = False) -> dict[str, Any]:
    """{name: ModelBundle} of the shipped drafter's stages, all from public weights: the base
    as drafter (no distillation), the shipped preset over the base before distillation (its
    adapters at their zero start), and the distilled drafter (last)."""
    from distill import students
    from pspec_jax.models import ModelBundle, load_default_base

    base = load_default_base()
    after = default_drafter(quiet)
    meta = read_meta(SHIPPED) or {}
    out = {f"base ({base.name}, no distillation)": base}
    if "student" in meta:
        st = students.build_student(meta["student"], base.config, base.params, seed=int(meta.get("seed", 0)))
        if st.config == base.config:  # every block kept: untrained (B = 0), it is the base itself
            out = {f"base ({base.name}) = {st.name} before distillation": base}
        else:
            out[f"{st.name} before distillation"] = ModelBundle(
                st.config, students.effective(st.params), base.tokenizer, f"{st.name}-untrained")
    out[f"{after.name} (distilled, shipped)"] = after
    return out


def default_drafter(quiet: bool = False):
    """The demo's drafter as a `ModelBundle` (see the module docstring)."""
    from pspec_jax.models import load_default_drafter, load_model

    d = default_drafter_dir()
    if (SHIPPED / DELTA).exists():
        present = (d / "config.json").exists()
        built = (read_meta(d) or {}) if present else {}
        # Rebuild when missing, or when it was rebuilt from an older shipped delta (a folder
        # that `pspec distill --out` wrote there, without delta_sha256, is the user's: kept).
        stale = "delta_sha256" in built and built["delta_sha256"] != delta_hash(SHIPPED)
        if not present or stale:
            if not quiet:
                print(f"pspec: building the distilled drafter from {SHIPPED} into {d}",
                      file=sys.stderr)
            materialize(SHIPPED, d)
    if (d / "config.json").exists():
        return load_model(d, name="distilled-drafter")
    if not quiet:
        print("pspec: using the untrained truncated drafter; align one with: " + DEFAULT_COMMAND,
              file=sys.stderr)
    return load_default_drafter()
