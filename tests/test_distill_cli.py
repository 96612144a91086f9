"""`pspec distill` and `pspec eval-acceptance` end to end on a tiny teacher (byte tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pspec_jax import cli


def _json_out(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_distill_writes_a_loadable_drafter(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PSPEC_HOME", str(tmp_path / "home"))
    teacher = tiny_folder("teacher", n_layers=3, max_seq_len=256, std=0.3)
    out = tmp_path / "drafter"
    rc = cli.main(["distill", "--teacher", str(teacher), "--student", "trunc1", "--loss", "tv",
                   "--data", "teacher", "--tokens", "1024", "--seq-len", "128", "--per-prompt", "1",
                   "--lr", "1e-2", "--out", str(out), "--json"])
    assert rc == 0
    meta = _json_out(capsys)
    assert meta["steps"] == 1 and meta["student"] == "trunc1" and meta["loss"] == "tv"
    assert 0.0 <= meta["acceptance_before"] <= 1.0 and 0.0 <= meta["acceptance_rate"] <= 1.0
    assert (out / "config.json").exists() and (out / "pspec_drafter.json").exists()

    from pspec_jax.models import load_model

    drafter = load_model(out)
    assert drafter.config.n_layers == 1 and drafter.tokenizer is not None
    # eval-acceptance on the written folder reproduces the α the run reported
    rc = cli.main(["eval-acceptance", "--private", str(teacher), "--public", str(out), "--json"])
    assert rc == 0
    res = _json_out(capsys)
    assert res["acceptance_rate"] == pytest.approx(meta["acceptance_rate"], abs=1e-5)
    a = res["acceptance_rate"]
    assert res["tokens_per_step"]["4"] == pytest.approx((1 - a ** 5) / (1 - a))
    # the teacher as its own drafter accepts everything (up to float16 storage of p)
    rc = cli.main(["eval-acceptance", "--private", str(teacher), "--public", str(teacher), "--json"])
    assert rc == 0 and _json_out(capsys)["acceptance_rate"] > 0.998


def _run(capsys, argv):
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["--loss", "kl"], "invalid choice: 'kl'"),
    (["--student", "huge"], "unknown student preset"),
    (["--student", "trunc9"], "only 3 layers"),
    (["--tokens", "0"], "--tokens must be >= 1, got 0"),
    (["--batch", "0"], "batch must be >= 1, got 0"),
    (["--per-prompt", "0"], "--per-prompt must be >= 1, got 0"),
    (["--checkpoint-every", "-1"], "checkpoint_every must be >= 0, got -1"),
    (["--resume", "--restart"], "not both"),
])
def test_distill_bad_input_is_one_line_exit_2(tiny_folder, tmp_path, monkeypatch, capsys, argv, msg):
    monkeypatch.setenv("PSPEC_HOME", str(tmp_path / "home"))
    teacher = tiny_folder("teacher", n_layers=3, max_seq_len=256)
    rc, err = _run(capsys, ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "o"), *argv])
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pspec: error: ") and msg in lines[0], err


def test_distill_keeps_an_earlier_runs_checkpoints(tiny_folder, tmp_path, monkeypatch, capsys):
    """Without --resume an existing DIR/ckpt is refused (kept, never deleted silently);
    --restart discards it."""
    monkeypatch.setenv("PSPEC_HOME", str(tmp_path / "home"))
    teacher = tiny_folder("teacher", n_layers=3, max_seq_len=256, std=0.3)
    out = tmp_path / "drafter"
    saved = out / "ckpt" / "50" / "state"
    saved.parent.mkdir(parents=True)
    saved.write_text("an interrupted run's checkpoint")
    argv = ["distill", "--teacher", str(teacher), "--student", "trunc1", "--tokens", "256",
            "--seq-len", "64", "--per-prompt", "1", "--no-eval", "--out", str(out), "--json"]
    rc, err = _run(capsys, argv)
    assert rc == 2 and "--resume" in err and "--restart" in err and "Traceback" not in err, err
    assert saved.read_text() == "an interrupted run's checkpoint"
    # --restart clears them (here before a teacher that does not load: nothing else ran)
    rc, err = _run(capsys, [*argv[:2], str(tmp_path / "no-teacher"), *argv[3:], "--restart"])
    assert rc == 2 and "no model at" in err, err
    assert not (out / "ckpt").exists()


def test_eval_acceptance_rejects_other_tokenizer(tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PSPEC_HOME", str(tmp_path / "home"))
    teacher = tiny_folder("teacher", max_seq_len=256)
    other = tiny_folder("other", max_seq_len=256, shuffle_seed=3)
    rc = cli.main(["eval-acceptance", "--private", str(teacher), "--public", str(other)])
    assert rc == 2 and "tokenizer" in capsys.readouterr().err


def test_corpus_windows_are_deterministic(monkeypatch, tmp_path):
    """The corpus reader cuts seeded windows (no network: a fake unpacked corpus)."""
    from distill import data

    monkeypatch.setenv("PSPEC_HOME", str(tmp_path))
    d = data.corpus_dir()
    d.mkdir(parents=True)
    (d / "a_gut.txt").write_text("to be or not to be " * 200)
    (d / "b_gut.txt").write_text("all the world's a stage " * 200)
    (d / ".complete").write_text("x")

    class Tok:
        def encode(self, s):
            return [ord(c) % 97 for c in s]

    w1 = data.corpus_windows(Tok(), 16, 5, seed=1)
    w2 = data.corpus_windows(Tok(), 16, 5, seed=1)
    assert w1.shape == (5, 17) and np.array_equal(w1, w2)


def test_lora_delta_of_a_keep_preset_falls_back_to_float16(tiny_folder, tmp_path, monkeypatch):
    """A delta too large for DELTA_LIMIT in float32 ships in float16; both rebuild."""
    from distill import export, students
    from pspec_jax.models import load_model

    teacher = load_model(tiny_folder("teacher", n_layers=3, max_seq_len=256, std=0.3))
    st = students.build_student("keep0.2-lora2", teacher.config, teacher.params)
    trained, base = st.split()
    trained = {k: (v + 0.01 if k.endswith("['b']") else v) for k, v in trained.items()}
    params = students.effective(students.merge(trained, base))
    f32 = sum(np.asarray(v).size * 4 for v in trained.values())
    monkeypatch.setattr(export, "DELTA_LIMIT", f32 - 1)
    out = export.save_drafter(tmp_path / "d", st.config, params, teacher.tokenizer,
                              {"student": st.name, "seed": 0}, trained=trained)
    from safetensors.numpy import load_file

    got = load_file(str(out / export.DELTA))
    assert all(v.dtype == np.float16 for v in got.values())
    assert (out / export.DELTA).stat().st_size < f32
    monkeypatch.setattr(export, "DELTA_LIMIT", 64)  # nothing fits: no delta at all
    out2 = export.save_drafter(tmp_path / "e", st.config, params, teacher.tokenizer,
                               {"student": st.name, "seed": 0}, trained=trained)
    assert not (out2 / export.DELTA).exists()
