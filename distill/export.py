"""The drafter on disk: a Hugging Face folder that `load_model(DIR)` (and so
`pspec generate --public DIR`) loads like any other model.

`pspec distill --out DIR` writes DIR/config.json + DIR/model.safetensors (float32, HF
LLaMA/GPT-2 names: the student's blocks, its final norm and the shared embedding/head)
+ the private model's tokenizer files, and DIR/pspec_drafter.json with the recipe
(command, seed, preset, loss, data, tokens) and α before/after. Checkpoints of the run
live in DIR/ckpt (Orbax) and can be deleted once the run is done.

`default_drafter()` is the drafter the demo uses: the distilled one at
`$PSPEC_HOME/drafters/default` when present, else the untrained truncated drafter (with
a one-line hint naming the command that makes the aligned one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distill.data import pspec_home

META = "pspec_drafter.json"
DEFAULT_NAME = "default"
# The recipe of the default drafter (README; scripts/distill_table.py records measured runs).
DEFAULT_COMMAND = ("pspec distill --teacher DEFAULT --student trunc8 --loss tv --data teacher "
                   "--tokens 200000 --out $PSPEC_HOME/drafters/default")


def default_drafter_dir() -> Path:
    return pspec_home() / "drafters" / DEFAULT_NAME


def save_drafter(out: str | Path, config, params, tokenizer, meta: dict[str, Any]) -> Path:
    from pspec_jax.models.loaders import save_hf_folder

    out = Path(out)
    save_hf_folder(out, config, params, tokenizer)
    (out / META).write_text(json.dumps(meta, indent=2))
    return out


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
    if (d / "config.json").exists():
        return load_model(d, name="distilled-drafter")
    if not quiet:
        print("pspec: using the untrained truncated drafter; align one with: " + DEFAULT_COMMAND,
              file=sys.stderr)
    return load_default_drafter()
