"""`pspec generate` / `fetch` / `demo`: output format, and bad input -> one line, exit 2."""

from __future__ import annotations

import json

import pytest

from pspec_jax.cli import main


def _run(capsys, *argv):
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err):
    assert rc == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("pspec: error: "), err
    assert "Traceback" not in err


@pytest.fixture
def pair(tiny_folder):
    return tiny_folder("private", seed=1, std=0.7), tiny_folder("public", seed=2, n_layers=1)


@pytest.mark.parametrize("mode", ["plain", "spec"])
def test_generate_json(capsys, pair, mode):
    from transformers import PreTrainedTokenizerFast

    priv, pub = pair
    rc, out, err = _run(capsys, "generate", "the theme", "--mode", mode, "--private", str(priv),
                        "--public", str(pub), "--max-new-tokens", "9", "--gamma", "3",
                        "--seed", "4", "--json", "--ignore-eos")
    assert rc == 0, err
    d = json.loads(out)
    for k in ("text", "tokens", "mode", "steps", "accepted_per_step", "acceptance_rate"):
        assert k in d
    assert d["mode"] == mode and len(d["tokens"]) == 9
    tok = PreTrainedTokenizerFast.from_pretrained(str(priv))
    assert d["text"] == tok.decode(d["tokens"], skip_special_tokens=True)
    if mode == "spec":
        assert d["steps"] == len(d["accepted_per_step"]) >= 3
        assert 0 <= d["acceptance_rate"] <= 1 and 0 <= d["alpha"] <= 1
        assert all(0 <= n <= 3 for n in d["accepted_per_step"])
    else:
        assert d["steps"] == 9 and d["accepted_per_step"] == [] and d["acceptance_rate"] is None


def test_generate_streams_text_and_summary(capsys, pair):
    priv, pub = pair
    rc, out, err = _run(capsys, "generate", "the", "--private", str(priv), "--public", str(pub),
                        "--max-new-tokens", "6", "--temperature", "0", "--chat", "--ignore-eos")
    assert rc == 0, err
    assert "tok/s" in err and "α" in err and "tokens/step" in err
    rc2, out2, _ = _run(capsys, "generate", "the", "--private", str(priv), "--public", str(pub),
                        "--max-new-tokens", "6", "--temperature", "0", "--chat", "--ignore-eos",
                        "--json", "--mode", "plain")
    assert out.rstrip("\n") == json.loads(out2)["text"]  # greedy spec == greedy plain


def test_bad_input_is_one_line_exit_2(capsys, pair, tiny_folder, tmp_path):
    priv, pub = pair
    base = ["generate", "the", "--private", str(priv), "--public", str(pub), "--max-new-tokens", "4"]
    cases = {
        "unknown path": ["generate", "x", "--private", str(tmp_path / "missing")],
        "gamma < 1": base + ["--gamma", "0"],
        "gamma not int": base + ["--gamma", "two"],
        "negative temperature": base + ["--temperature", "-1"],
        "top_p out of range": base + ["--top-p", "1.5"],
        "prompt longer than context": base[:1] + ["the " * 80] + base[2:],
        "unknown mode": base + ["--mode", "quantum"],
        "unknown privacy mode": base + ["--mode", "post", "--privacy", "open"],
        "unknown network": base + ["--mode", "post", "--network", "moon"],
        "top-k in a secure mode": base + ["--mode", "post", "--top-k", "3"],
    }
    mismatched = tiny_folder("other", seed=3, shuffle_seed=7)
    cases["mismatched tokenizers"] = ["generate", "the", "--private", str(priv), "--public", str(mismatched)]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 40)
    cases["corrupt gguf"] = ["generate", "x", "--private", str(bad)]
    trunc = tiny_folder("trunc", seed=4)
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    cases["truncated safetensors"] = ["generate", "x", "--private", str(trunc)]
    corrupt = tiny_folder("corrupt", seed=5)
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 300)
    cases["corrupt safetensors"] = ["generate", "x", "--mode", "plain", "--private", str(corrupt)]
    notok = tiny_folder("notok", seed=6, tokenizer=False)
    cases["no tokenizer"] = ["generate", "x", "--private", str(notok)]
    for name, argv in cases.items():
        rc, out, err = _run(capsys, *argv)
        try:
            _one_line_error(rc, err)
        except AssertionError as e:
            raise AssertionError(f"{name}: rc={rc} err={err!r}") from e
    rc, _, err = _run(capsys, "generate", "x", "--private", str(mismatched), "--public", str(priv))
    assert "different tokenizers" in err


@pytest.mark.slow
def test_generate_post_json(capsys, pair):
    priv, pub = pair
    rc, out, err = _run(capsys, "generate", "the theme", "--mode", "post", "--privacy", "paper",
                        "--private", str(priv), "--public", str(pub), "--max-new-tokens", "4",
                        "--gamma", "2", "--json", "--ignore-eos", "--network", "wan")
    assert rc == 0, err
    d = json.loads(out)
    assert d["mode"] == "post" and len(d["tokens"]) == 4 and d["gamma"] == 2 and d["privacy"] == "paper"
    assert d["steps"] == len(d["accepted_per_step"]) and 0 <= d["acceptance_rate"] <= 1
    assert d["tokens_per_step"] == pytest.approx(4 / d["steps"])
    for k in ("secure_passes", "compute_s", "bytes_per_party", "rounds", "modeled_s", "verify_share"):
        assert k in d
    assert d["secure_passes"] == d["steps"] + 1 and set(d["modeled_s"]) == {"lan", "wan", "dc"}


def test_mode_registry_is_extensible(capsys, pair):
    from pspec_jax.commands import generate as G

    seen = {}

    def runner(req):
        seen["ids"] = req.prompt_ids
        seen["drafter"] = req.drafter().config.n_layers
        return G.run_plain(req)

    G.register_mode("echo-test", runner)
    try:
        priv, pub = pair
        rc, out, err = _run(capsys, "generate", "the", "--mode", "echo-test", "--private", str(priv),
                            "--public", str(pub), "--max-new-tokens", "3", "--json")
        assert rc == 0, err
        assert seen["drafter"] == 1 and len(json.loads(out)["tokens"]) == 3
        assert seen["ids"] == [83, 257]  # "the" in the byte tokenizer: t + he
    finally:
        G.MODES.pop("echo-test")


@pytest.mark.model
def test_generate_default_pair_json(capsys, smollm2):
    rc, out, err = _run(capsys, "generate", "Once upon a time", "--temperature", "0",
                        "--max-new-tokens", "10", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["text"] == ", the city of Nova Haven was a thriving metropolis" and d["mode"] == "spec"


@pytest.mark.model
def test_demo_and_fetch(capsys, smollm2):
    rc, out, err = _run(capsys, "fetch")
    assert rc == 0 and "smollm2-135m-instruct" in out
    rc, out, err = _run(capsys, "demo", "--mode", "spec", "--max-new-tokens", "8")
    assert rc == 0, err
    assert "prompt: 'Once upon a time'" in out and ", the city of Nova Haven" in out
    assert "tokens/step" in err and "α " in err
    assert "same tokens" in out
