"""`pspec generate` / `fetch` / `demo`: output format, and bad input -> one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli
from pspec_jax.cli import main


@pytest.fixture
def pair(tiny_folder):
    return tiny_folder("private", seed=1, std=0.7), tiny_folder("public", seed=2, n_layers=1)


@pytest.mark.parametrize("mode", ["plain", "spec"])
def test_generate_json(capsys, pair, mode):
    """The JSON is the run the library makes with the same seed (tokens, per-step
    accepts), and its step figures add up: a step's n accepts emit n + 1 tokens, the last
    step cut to the budget."""
    from transformers import PreTrainedTokenizerFast

    from pspec_jax.decode import Sampling, generate_plain, generate_spec
    from pspec_jax.models import load_model

    priv, pub = pair
    rc, out, err = run_cli(capsys, "generate", "the theme", "--mode", mode, "--private", str(priv),
                        "--public", str(pub), "--max-new-tokens", "9", "--gamma", "3",
                        "--seed", "4", "--json", "--ignore-eos")
    assert rc == 0, err
    d = json.loads(out)
    for k in ("text", "tokens", "mode", "steps", "accepted_per_step", "acceptance_rate"):
        assert k in d
    assert d["mode"] == mode and len(d["tokens"]) == 9
    assert d["seeded"] is True and d["seed"] == 4
    tok = PreTrainedTokenizerFast.from_pretrained(str(priv))
    assert d["text"] == tok.decode(d["tokens"], skip_special_tokens=True)
    private, drafter = load_model(priv), load_model(pub)
    ids = tok("the theme")["input_ids"]
    assert d["prompt_tokens"] == len(ids)
    if mode == "spec":
        ref = generate_spec(private, drafter, ids, 9, 3, Sampling(1.0), seed=4)
        assert d["tokens"] == ref.tokens and d["accepted_per_step"] == ref.accepted_per_step
        acc = d["accepted_per_step"]
        assert d["steps"] == len(acc) and all(0 <= n <= 3 for n in acc)
        emitted = [n + 1 for n in acc]
        assert sum(emitted[:-1]) < 9 <= sum(emitted)  # no step after the budget is met
        assert d["acceptance_rate"] == pytest.approx(sum(acc) / (3 * len(acc)), abs=1e-6)
        assert d["tokens_per_step"] == pytest.approx(9 / len(acc), abs=1e-6)
        assert 0 <= d["alpha"] <= 1
    else:
        ref = generate_plain(private, ids, 9, Sampling(1.0), seed=4)
        assert d["tokens"] == ref.tokens
        assert d["steps"] == 9 and d["accepted_per_step"] == [] and d["acceptance_rate"] is None


def test_unseeded_runs_differ_seeded_runs_agree(capsys, pair):
    """Without --seed the client's key comes from os.urandom (runs differ and say they are
    not seeded); the same --seed reproduces a run."""
    priv, pub = pair
    base = ["generate", "the theme", "--private", str(priv), "--public", str(pub),
            "--max-new-tokens", "16", "--json", "--ignore-eos"]
    for mode in ("plain", "spec"):
        runs = []
        for _ in range(3):
            rc, out, err = run_cli(capsys, *base, "--mode", mode)
            assert rc == 0, err
            d = json.loads(out)
            assert d["seeded"] is False and d["seed"] is None
            runs.append(d["tokens"])
        # 16 draws at T = 1 from a flat-ish law over 264 ids: equal runs mean a fixed key
        assert len({tuple(r) for r in runs}) == 3, (mode, runs)
        seeded = [json.loads(run_cli(capsys, *base, "--mode", mode, "--seed", "11")[1])["tokens"]
                  for _ in range(2)]
        assert seeded[0] == seeded[1]


def test_client_key_and_secret_uniform():
    import numpy as np

    from pspec_jax.decode.sampling import client_key, secret_uniform

    assert not np.array_equal(np.asarray(client_key(None)), np.asarray(client_key(None)))
    assert np.array_equal(np.asarray(client_key(7)), np.asarray(client_key(7)))
    u = secret_uniform(4000)
    assert u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.03 and len(np.unique(u)) == 4000
    assert not np.array_equal(secret_uniform(8), secret_uniform(8))


class _StopAfterVerify(Exception):
    pass


def _capture_post_thresholds(capsys, monkeypatch, argv) -> list[np.ndarray]:
    """Runs `pspec generate --mode post` up to its first verification with the secure
    parts replaced by stubs (no MPC), and returns the thresholds r_i·q_i(x_i) and r_i the
    client sent there."""
    import contextlib

    import jax.numpy as jnp

    import pspec_jax.secure

    class Ledger:
        def scope(self, _):
            return contextlib.nullcontext()

        def snapshot(self):
            return 0

    class Session:
        def __init__(self, config, params, max_len, **_):
            from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

            self.max_len, self.V, self.ledger, self.setup_s = max_len, config.vocab_size, Ledger(), 0.0
            self.config, self.ctx = config, types.SimpleNamespace(config=DEFAULT_MPC_CONFIG)

        def rollback(self, n):
            pass

        def forward(self, ids, **_):
            return jnp.zeros((1, len(ids), self.V))

        def verify(self, logits, drafts, thresholds, q_rows, *_):
            t = np.asarray(thresholds)
            qx = np.asarray(q_rows)[np.arange(len(t)), np.asarray(drafts)]
            seen.append(t / qx)
            raise _StopAfterVerify

    seen = []
    monkeypatch.setattr(pspec_jax.secure, "SecureSession", Session)
    with pytest.raises(_StopAfterVerify):
        main(argv)
    capsys.readouterr()
    return seen[0]


def test_post_thresholds_are_secret_unless_seeded(capsys, monkeypatch, pair):
    """The r_i of a default POST run cannot be predicted (they differ run to run); a
    seeded run repeats them (which is why it is not private)."""
    priv, pub = pair
    argv = ["generate", "the theme", "--mode", "post", "--private", str(priv), "--public", str(pub),
            "--max-new-tokens", "4", "--gamma", "4", "--ignore-eos"]
    r1, r2 = (_capture_post_thresholds(capsys, monkeypatch, argv) for _ in range(2))
    assert r1.shape == (4,) and np.all((0 <= r1) & (r1 < 1)) and np.all((0 <= r2) & (r2 < 1))
    assert not np.allclose(r1, r2), (r1, r2)
    s1, s2 = (_capture_post_thresholds(capsys, monkeypatch, argv + ["--seed", "3"]) for _ in range(2))
    np.testing.assert_array_equal(s1, s2)


def test_generate_streams_text_and_summary(capsys, pair):
    priv, pub = pair
    rc, out, err = run_cli(capsys, "generate", "the", "--private", str(priv), "--public", str(pub),
                        "--max-new-tokens", "6", "--temperature", "0", "--chat", "--ignore-eos")
    assert rc == 0, err
    assert "tok/s" in err and "α" in err and "tokens/step" in err
    rc2, out2, _ = run_cli(capsys, "generate", "the", "--private", str(priv), "--public", str(pub),
                        "--max-new-tokens", "6", "--temperature", "0", "--chat", "--ignore-eos",
                        "--json", "--mode", "plain")
    assert out.rstrip("\n") == json.loads(out2)["text"]  # greedy spec == greedy plain


def test_bad_input_is_one_line_exit_2(capsys, pair, tiny_folder, tmp_path):
    """Each bad input gets its own one-line error (the message names what was wrong)."""
    priv, pub = pair
    base = ["generate", "the", "--private", str(priv), "--public", str(pub), "--max-new-tokens", "4"]
    cases = {
        "unknown path": (["generate", "x", "--private", str(tmp_path / "missing")], "no model at"),
        "gamma < 1": (base + ["--gamma", "0"], "must be an integer >= 1, got 0"),
        "gamma not int": (base + ["--gamma", "two"], "invalid int value: 'two'"),
        "negative temperature": (base + ["--temperature", "-1"], "temperature must be >= 0"),
        "top_p out of range": (base + ["--top-p", "1.5"], "top_p must be in (0, 1]"),
        "prompt longer than context": (base[:1] + ["the " * 80] + base[2:], "does not fit the model context"),
        "unknown mode": (base + ["--mode", "quantum"], "invalid choice: 'quantum'"),
        "unknown privacy mode": (base + ["--mode", "post", "--privacy", "open"], "unknown privacy mode 'open'"),
        "unknown network": (base + ["--mode", "post", "--network", "moon"], "unknown network 'moon'"),
        "top-k in a secure mode": (base + ["--mode", "post", "--top-k", "3"], "no --top-k/--top-p"),
        "gamma > 64 in post": (base + ["--mode", "post", "--gamma", "65"], "must be <= 64 in POST"),
        "network in plain": (base + ["--mode", "plain", "--network", "wan"],
                             "--network does not apply to --mode plain"),
        "privacy in spec": (base + ["--mode", "spec", "--privacy", "paper"],
                            "--privacy does not apply to --mode spec"),
        "privacy in secure": (base + ["--mode", "secure", "--privacy", "paper"],
                              "--privacy does not apply to --mode secure"),
        "seed in secure": (base + ["--mode", "secure", "--seed", "0"], "--seed does not apply to --mode secure"),
        "non-UTF-8 prompt": (["generate", "ab\udcffc"] + base[2:], "not valid UTF-8 (byte 0xff at character 2)"),
        "prompt and prompt file": (base + ["--prompt-file", str(tmp_path / "p.txt")], "exactly one"),
        "no prompt": (base[:1] + base[2:], "exactly one"),
        "missing prompt file": (base[:1] + base[2:] + ["--prompt-file", str(tmp_path / "none.txt")],
                                "cannot read --prompt-file"),
    }
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    cases["non-UTF-8 prompt file"] = (base[:1] + base[2:] + ["--prompt-file", str(latin1)],
                                      "is not valid UTF-8 (byte 0xe9 at offset 3)")
    mismatched = tiny_folder("other", seed=3, shuffle_seed=7)
    cases["mismatched tokenizers"] = (["generate", "the", "--private", str(priv), "--public", str(mismatched)],
                                      "different tokenizers")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x01" * 40)
    cases["corrupt gguf"] = (["generate", "x", "--private", str(bad)], "corrupt or truncated GGUF file")
    trunc = tiny_folder("trunc", seed=4)
    st = trunc / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    cases["truncated safetensors"] = (["generate", "x", "--private", str(trunc)],
                                      "corrupt or truncated safetensors file")
    corrupt = tiny_folder("corrupt", seed=5)
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 300)
    cases["corrupt safetensors"] = (["generate", "x", "--mode", "plain", "--private", str(corrupt)],
                                    "corrupt or truncated safetensors file")
    notok = tiny_folder("notok", seed=6, tokenizer=False)
    cases["no tokenizer"] = (["generate", "x", "--private", str(notok)], "has no tokenizer")
    wrong = []
    for name, (argv, msg) in cases.items():
        rc, out, err = run_cli(capsys, *argv)
        try:
            assert_one_line_error(rc, err)
            assert msg in err, f"expected {msg!r}"
        except AssertionError as e:
            wrong.append(f"{name}: rc={rc} err={err!r} ({e})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("argv,msg", [
    (["--mode", "post", "--gamma", "65"], "must be <= 64 in POST"),
    (["--mode", "post", "--network", "moon"], "unknown network 'moon'"),
    (["--mode", "post", "--privacy", "open"], "unknown privacy mode 'open'"),
    (["--mode", "spec", "--network", "wan"], "--network does not apply to --mode spec"),
    (["--mode", "post", "--top-k", "2"], "no --top-k/--top-p"),
])
def test_options_are_checked_before_the_model_loads(capsys, tmp_path, argv, msg):
    """The private model here does not exist: an option error that names the option (not
    the missing model) was raised before the model load."""
    rc, _, err = run_cli(capsys, "generate", "x", "--private", str(tmp_path / "missing"), *argv)
    assert_one_line_error(rc, err)
    assert msg in err


def test_gamma_limits_in_post_and_spec(tmp_path):
    from pspec_jax.decode.common import MAX_POST_GAMMA, check_gamma
    from pspec_jax.decode.post import generate_post
    from pspec_jax.errors import UserError
    from pspec_jax.models import tiny_model

    assert MAX_POST_GAMMA == 64
    assert check_gamma(64, post=True) == 64 and check_gamma(65) == 65  # spec: any γ
    m = tiny_model("llama", seed=1, max_seq_len=256)
    with pytest.raises(UserError, match=r"must be <= 64 in POST .*got 65"):
        generate_post(m, m, [1, 2], 4, gamma=65)  # before any secure setup
    with pytest.raises(UserError, match=">= 1"):
        check_gamma(True)


def test_non_utf8_argv_bytes(pair):
    """Real argv bytes (not valid UTF-8) from a shell: one line, exit 2, no traceback."""
    priv, pub = pair
    env = {**__import__("os").environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1]),
           "LC_ALL": "C.UTF-8"}
    p = subprocess.run([sys.executable, "-m", "pspec_jax.cli", b"generate", b"caf\xe9", b"--mode", b"plain",
                        b"--private", str(priv).encode(), b"--max-new-tokens", b"2"],
                       capture_output=True, env=env, timeout=300)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, err
    assert err.strip() == "pspec: error: the prompt is not valid UTF-8 (byte 0xe9 at character 3)"


def test_prompt_file(capsys, pair, tmp_path):
    priv, pub = pair
    f = tmp_path / "p.txt"
    f.write_text("the theme", encoding="utf-8")
    common = ["--mode", "plain", "--private", str(priv), "--max-new-tokens", "3", "--json",
              "--seed", "2", "--ignore-eos"]
    rc, out, err = run_cli(capsys, "generate", "--prompt-file", str(f), *common)
    assert rc == 0, err
    rc2, out2, _ = run_cli(capsys, "generate", "the theme", *common)
    assert json.loads(out)["tokens"] == json.loads(out2)["tokens"]
    assert json.loads(out)["prompt_tokens"] == json.loads(out2)["prompt_tokens"]


@pytest.mark.slow
def test_generate_post_json(capsys, pair):
    priv, pub = pair
    rc, out, err = run_cli(capsys, "generate", "the theme", "--mode", "post", "--privacy", "paper",
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
        rc, out, err = run_cli(capsys, "generate", "the", "--mode", "echo-test", "--private", str(priv),
                            "--public", str(pub), "--max-new-tokens", "3", "--json")
        assert rc == 0, err
        assert seen["drafter"] == 1 and len(json.loads(out)["tokens"]) == 3
        assert seen["ids"] == [83, 257]  # "the" in the byte tokenizer: t + he
    finally:
        G.MODES.pop("echo-test")


@pytest.mark.model
def test_generate_default_pair_json(capsys, smollm2):
    rc, out, err = run_cli(capsys, "generate", "Once upon a time", "--temperature", "0",
                           "--max-new-tokens", "10", "--json")
    assert rc == 0, err
    d = json.loads(out)
    # the private fine-tune's greedy continuation (the public base's: ", the city of Nova Haven …")
    assert d["text"] == ", the world was divided into two, and the" and d["mode"] == "spec"


@pytest.mark.model
def test_demo_and_fetch(capsys, smollm2):
    rc, out, err = run_cli(capsys, "fetch")
    assert rc == 0 and "smollm2-135m-instruct" in out and "smollm2-135m-pydoc" in out
    rc, out, err = run_cli(capsys, "demo", "--mode", "spec", "--max-new-tokens", "8")
    assert rc == 0, err
    assert "prompt: 'Once upon a time'" in out and ", the world was divided" in out
    assert "tokens/step" in err and "α " in err
    assert "same tokens" in out
