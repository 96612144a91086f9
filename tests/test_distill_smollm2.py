"""Distillation pieces on the default SmolLM2 pair (fetched on first use)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_lora_delta_materializes_the_same_drafter(tmp_path):
    from distill import export, students
    from pspec_jax.models import load_default_base, load_model

    base_model = load_default_base()  # a drafter is built over the public base
    st = students.build_student("trunc2-lora4", base_model.config, base_model.params, seed=0)
    trained, base = st.split()
    # a non-trivial delta: B != 0
    trained = {k: (v + 0.01 if k.endswith("['b']") else v) for k, v in trained.items()}
    params = students.merge(trained, base)
    meta = {"teacher": "DEFAULT", "student": st.name, "seed": 0}
    out = export.save_drafter(tmp_path / "d", st.config, students.effective(params),
                              base_model.tokenizer, meta, trained=trained)
    assert (out / export.DELTA).stat().st_size < export.DELTA_LIMIT
    rebuilt = export.materialize(out, tmp_path / "r")
    a, b = load_model(out), load_model(rebuilt)
    ids = np.asarray([[1, 2, 3, 4]], np.int32)
    np.testing.assert_array_equal(np.asarray(a.forward(ids)[0]), np.asarray(b.forward(ids)[0]))
    assert json.loads((rebuilt / export.META).read_text())["student"] == "trunc2-lora4"


def test_untrained_truncated_drafter_alpha_is_low(capsys):
    """The untrained 8-layer truncation accepts rarely (α ≈ 0.06 on this machine)."""
    from pspec_jax import cli

    assert cli.main(["eval-acceptance", "--public", "trunc8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.02 < res["acceptance_rate"] < 0.15


def test_default_drafter_is_rebuilt_when_the_shipped_delta_changes(tmp_path, monkeypatch):
    from distill import export, students
    from pspec_jax.models import load_default_base

    base_model = load_default_base()
    st = students.build_student("keep0.3-lora2", base_model.config, base_model.params, seed=0)
    trained, base = st.split()
    meta = {"teacher": "DEFAULT", "student": st.name, "seed": 0}

    def ship(shift):
        t = {k: (v + shift if k.endswith("['b']") else v) for k, v in trained.items()}
        export.save_drafter(tmp_path / "ship", st.config, students.effective(students.merge(t, base)),
                            base_model.tokenizer, meta, trained=t)

    home = tmp_path / "home" / "default"
    monkeypatch.setattr(export, "SHIPPED", tmp_path / "ship")
    monkeypatch.setattr(export, "default_drafter_dir", lambda: home)
    ship(0.01)
    a = export.default_drafter(quiet=True)  # built from the delta on first use
    assert a.config.n_layers == 2 and export.read_meta(home)["delta_sha256"] == export.delta_hash(tmp_path / "ship")
    ids = np.asarray([[1, 2, 3, 4]], np.int32)
    la = np.asarray(a.forward(ids)[0])
    ship(0.02)
    lb = np.asarray(export.default_drafter(quiet=True).forward(ids)[0])  # stale: rebuilt
    assert not np.array_equal(la, lb)
    m = export.read_meta(home)
    m.pop("delta_sha256")  # a folder the user's own `pspec distill --out` wrote: kept
    (home / export.META).write_text(json.dumps(m))
    ship(0.03)
    np.testing.assert_array_equal(np.asarray(export.default_drafter(quiet=True).forward(ids)[0]), lb)
