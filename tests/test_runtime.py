"""Real runs: the dealer, the server and the client as three processes on loopback.

A tiny private model (saved as a Hugging Face folder) keeps compilation short; the same
code serves SmolLM2. Every process is started with a bounded timeout and killed at the
end of its test; nothing here can hang.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

PSPEC = [sys.executable, "-m", "pspec_jax.cli"]
PROMPT = "the theme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A party process whose stderr goes to a file (read back by the tests)."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.p = subprocess.Popen(PSPEC + args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def text(self) -> str:
        self.log.flush()
        return open(self.log_path).read()

    def wait_for(self, pattern: str, timeout: float = 120.0) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if re.search(pattern, self.text()):
                return
            if self.p.poll() is not None:
                raise AssertionError(f"process exited: {self.text()[-2000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {pattern!r}: {self.text()[-2000:]}")

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)
        self.log.close()


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", PSPEC_NO_JIT_CACHE="1")
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture
def parties(tmp_path, tiny_folder):
    """(start(...) -> (dealer, server), model path, tmp); everything started is killed."""
    procs = []
    model = tiny_folder("private", seed=3, vocab_size=264)

    def start(server_args=(), dealer_args=(), tls=None):
        dport, sport = free_port(), free_port()
        extra = ["--tls", str(tls)] if tls else []
        dealer = Proc(["dealer", "--listen", f"127.0.0.1:{dport}", "--timeout", "60", *extra, *dealer_args],
                      tmp_path / f"dealer{len(procs)}.log", _env())
        procs.append(dealer)
        server = Proc(["serve", "--listen", f"127.0.0.1:{sport}", "--dealer", f"127.0.0.1:{dport}",
                       "--private", str(model), "--timeout", "60", *extra, *server_args],
                      tmp_path / f"server{len(procs)}.log", _env())
        procs.append(server)
        dealer.wait_for("listening")
        server.wait_for("listening")
        return dealer, server, dport, sport

    yield start, model, tmp_path
    for p in procs:
        p.kill()


def client(model, sport, dport, *args, timeout=600):
    cmd = PSPEC + ["generate", PROMPT, "--private", str(model), "--server", f"127.0.0.1:{sport}",
                   "--dealer", f"127.0.0.1:{dport}", "--timeout", "60", "--json", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def plain_tokens(model, n):
    r = subprocess.run(PSPEC + ["generate", PROMPT, "--private", str(model), "--mode", "plain", "--temperature",
                                "0", "--max-new-tokens", str(n), "--ignore-eos", "--json"],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["tokens"]


def test_three_processes_greedy_secure_and_post_equal_plain(parties):
    start, model, _ = parties
    dealer, server, dport, sport = start()
    want = plain_tokens(model, 5)
    for mode in ("secure", "post"):
        r = client(model, sport, dport, "--mode", mode, "--temperature", "0", "--max-new-tokens", "5",
                   "--ignore-eos", "--public", str(model), "--gamma", "3")
        assert r.returncode == 0, r.stderr[-3000:]
        out = json.loads(r.stdout)
        assert out["tokens"] == want, (mode, out["tokens"], want)
        # the client wrote to the server's socket exactly what its ledger counts, plus its
        # control messages (session request, commands); framing is counted apart
        sb = out["socket_bytes"]
        assert sb["payload_written"]["server_link"] == out["ledger_bytes_to_server"] + sb["control_bytes"]
        assert out["wall_s"] > 0
    server.wait_for(r"session \w+: done.*\n.*session \w+: done", timeout=60)
    # the server's and the dealer's logs never hold the prompt or the output
    for log in (server.text(), dealer.text()):
        assert PROMPT not in log and "theme" not in log
