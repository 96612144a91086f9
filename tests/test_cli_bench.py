"""`pspec bench decode`: its options and the `--reuse-secure` file are checked before any
model loads, and a corrupt file is a one-line error naming what is wrong."""

from __future__ import annotations

import json

import pytest

from pspec_jax.cli import main


def _saved_run() -> dict:
    step = {"compute_s": 1.0, "bytes": 10.0, "rounds": 5.0, "draft_s": 0.1, "lan": 0.5, "wan": 2.0}
    row = {"drafter": "d", "kind": "measured", "draft": "chain γ=2", "shape": "chain", "budget": 2,
           "tokens_per_step": 2.5,
           "speedup_lan": 1.5, "speedup_wan": 2.1}
    return {"baseline": {"tokens": 4, "lan_s_per_token": 0.9, "wan_s_per_token": 3.0},
            "rows": [row], "step_costs": {"2": step}, "settings": {"tokens": 4}}


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the errors must come before it."""
    import pspec_jax.models

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(pspec_jax.models, "load_default_private", boom)
    monkeypatch.setattr(pspec_jax.models, "load_model", boom)


def _bench(capsys, *argv):
    try:
        rc = main(["bench", "decode", *argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("content,msg", [
    ('{"baseline": {"tokens": 4', "cannot read"),
    (b"\xff\xfe{}", "cannot read"),
    ("[1, 2]", "not a JSON object"),
    ("{}", "no 'baseline' object"),
    ("DROP:step_costs", "no 'step_costs' object"),
    ("SET:step_costs={}", "no step costs"),
    ("SET:step_costs={'x': {}}", "step_costs key 'x' is not a γ"),
    ("DEL:step_costs.2.wan", "step_costs[2].wan is None"),
    ("SET:baseline.wan_s_per_token='fast'", "baseline.wan_s_per_token is 'fast'"),
    ("SET:rows=[{'drafter': 'd'}]", "rows[0] lacks its drafter, kind or draft shape"),
    ("SET:step_costs.2.lan=0", "has no modelled time"),
])
def test_corrupt_reuse_secure_file(capsys, tmp_path, no_model, content, msg):
    path = tmp_path / "decode_secure.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content.split(":")[0] in ("DROP", "SET", "DEL"):
        d = _saved_run()
        op, what = content.split(":", 1)
        if op == "DROP":
            del d[what]
        elif op == "DEL":
            a, b, c = what.split(".")
            del d[a][b][c]
        else:
            target, value = what.split("=", 1)
            *parents, leaf = target.split(".")
            obj = d
            for p in parents:
                obj = obj[p]
            obj[leaf] = eval(value)  # noqa: S307 - test literals
        path.write_text(json.dumps(d))
    else:
        path.write_text(content)
    rc, err = _bench(capsys, "--reuse-secure", "--out", str(tmp_path))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("pspec: error: --reuse-secure"), err
    assert msg in err, err


def test_reuse_secure_accepts_a_good_file(tmp_path):
    from pspec_jax.benchmarks.decode import load_secure_costs

    path = tmp_path / "decode_secure.json"
    path.write_text(json.dumps(_saved_run()))
    assert load_secure_costs(path) == _saved_run()


@pytest.mark.parametrize("argv,msg", [
    (["--reuse-secure"], "does not exist"),
    (["--gammas", "4", "65"], "must be <= 64 in POST"),
    (["--gammas", "0"], "must be an integer >= 1, got 0"),
    (["--trees", "0"], "node budget (--tree N) must be an integer >= 1, got 0"),
    (["--gammas", "--trees", "--adaptive-trees"], "nothing to measure"),
    (["--privacy", "open"], "unknown privacy mode 'open'"),
])
def test_bench_decode_options_before_the_model(capsys, tmp_path, no_model, argv, msg):
    rc, err = _bench(capsys, "--out", str(tmp_path), *argv)
    assert rc == 2 and err.count("\n") == 1 and msg in err, err


@pytest.mark.parametrize("argv,msg", [
    (["--shape", "gpt5"], "unknown --shape 'gpt5'"),
    (["--shape", "d960", "--private", "x"], "not both"),
    (["--comparison", "bogus"], "invalid choice: 'bogus'"),
])
def test_bench_forward_options_before_the_model(capsys, no_model, argv, msg):
    try:
        rc = main(["bench", "forward", *argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and msg in err, err


@pytest.mark.slow  # compiles three pass widths: minutes on 2 cores
def test_bench_forward_on_a_model_folder(capsys, tiny_folder, tmp_path):
    """`pspec bench forward --private PATH --quick`: the cost rows, the fidelity row
    (max_abs_logit_err against the plain model) and the calibrated ranges."""
    rc = main(["bench", "forward", "--private", str(tiny_folder()), "--quick", "--repeats", "1", "--json",
               "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [r["T"] for r in out["forward"]] == [1, 2, 4]
    for row in out["forward"]:  # the split session's offline and online parts of each pass
        assert 0 < row["online_s"] <= row["compute_s"] and 0 < row["offline_s"] <= row["compute_s"]
        assert row["dealer_bytes_per_party"] > 0 and row["bytes_per_party"] > 0
    (fid,) = out["fidelity"]
    assert fid["max_abs_logit_err"] < 0.1 and fid["top1_agree"] >= 0.75
    assert out["ranges"][0]["logit_spread"] > 0
