"""The drafter on disk: a Hugging Face folder that `load_model(DIR)` (and so
`pspec generate --public DIR`) loads like any other model.

`pspec distill --out DIR` writes DIR/config.json + DIR/model.safetensors (float32, HF
LLaMA/GPT-2 names: the student's blocks, its final norm and the shared embedding/head)
+ the private model's tokenizer files, and DIR/pspec_drafter.json with the recipe
(command, seed, preset, loss, data, tokens) and α before/after. Checkpoints of the run
live in DIR/ckpt (Orbax) and can be deleted once the run is done.

`default_drafter()` is the drafter the demo uses: the distilled one at
`$PSPEC_HOME/drafters/default` when present (built on first use from the small delta
shipped in `distill/drafters/default/` when the repository has one, and rebuilt when that
delta changes), else the untrained
truncated drafter (with a one-line hint naming the command that makes the aligned one).
Small students (LoRA presets) also get DIR/trained.safetensors: only their trained
leaves (float32, or float16 when float32 would exceed DELTA_LIMIT), from which
`materialize` rebuilds the full folder over the default model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distill.data import pspec_home

META = "pspec_drafter.json"
DELTA = "trained.safetensors"
DELTA_LIMIT = 12 * 2**20  # bytes: what may go into git
# A drafter shipped in the repository as trained leaves only (LoRA factors + norms).
SHIPPED = Path(__file__).resolve().parent / "drafters" / "default"
DEFAULT_NAME = "default"
# The recipe of the default drafter (README; scripts/distill_table.py records measured runs).
DEFAULT_COMMAND = ("pspec distill --teacher DEFAULT --student keep0-3.5-13.18-25.27-29-lora16 "
                   "--loss tv --data teacher --tokens 230000 --rounds 3 --lr 3e-3 --warmup 10 "
                   "--seed 0 --time-limit 78 --out $PSPEC_HOME/drafters/default")


def default_drafter_dir() -> Path:
    return pspec_home() / "drafters" / DEFAULT_NAME


def save_drafter(out: str | Path, config, params, tokenizer, meta: dict[str, Any],
                 trained: dict[str, Any] | None = None) -> Path:
    """Writes the HF folder; with `trained` (the student's trained leaves by path) small
    enough to keep in git (≤ DELTA_LIMIT bytes), also DIR/trained.safetensors, from which
    `materialize` rebuilds the folder given the same teacher."""
    import numpy as np
    from safetensors.numpy import save_file

    from pspec_jax.models.loaders import save_hf_folder

    out = Path(out)
    save_hf_folder(out, config, params, tokenizer)
    if trained is not None:
        # float32 when it fits, else float16 (LoRA factors and norm scales lose nothing that
        # matters to α at half precision; `materialize` computes in float32 again).
        for dtype in (np.float32, np.float16):
            arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32).astype(dtype))
                      for k, v in trained.items()}
            if sum(a.nbytes for a in arrays.values()) <= DELTA_LIMIT:
                save_file(arrays, str(out / DELTA), metadata={"student": str(meta.get("student")),
                                                               "dtype": np.dtype(dtype).name})
                break
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


def materialize(delta_dir: str | Path, out: str | Path) -> Path:
    """Rebuilds a drafter folder from DIR/trained.safetensors + DIR/pspec_drafter.json and
    the default private model (the student preset's untouched parts come from it)."""
    import numpy as np
    from safetensors.numpy import load_file

    from distill import students
    from pspec_jax.errors import UserError
    from pspec_jax.models import load_default_private

    delta_dir = Path(delta_dir)
    meta = read_meta(delta_dir)
    if meta is None or not (delta_dir / DELTA).exists():
        raise UserError(f"{delta_dir} holds no {DELTA} + {META}")
    if str(meta.get("teacher", "DEFAULT")).upper() != "DEFAULT":
        raise UserError(f"{delta_dir}: only drafters of the DEFAULT teacher can be rebuilt")
    private = load_default_private()
    st = students.build_student(meta["student"], private.config, private.params,
                                seed=int(meta.get("seed", 0)))
    trained, base = st.split()
    got = load_file(str(delta_dir / DELTA))
    if set(got) != set(trained):
        raise UserError(f"{delta_dir / DELTA} does not match the preset {meta['student']}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(trained[k].shape):
            raise UserError(f"{delta_dir / DELTA}: {k} has shape {v.shape}, expected {trained[k].shape}")
    params = students.effective(students.merge(
        {k: np.asarray(v, np.float32) for k, v in got.items()}, base))
    meta = {**meta, "delta_sha256": delta_hash(delta_dir)}
    stale = Path(out) / DELTA  # an older run's delta would not match the rebuilt folder
    if stale.exists() and stale.resolve() != (delta_dir / DELTA).resolve():
        stale.unlink()
    return save_drafter(out, st.config, params, private.tokenizer, meta)


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
