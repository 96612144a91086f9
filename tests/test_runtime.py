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
import statistics
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::mpc.transport.PlaintextWarning")

PSPEC = [sys.executable, "-m", "pspec_jax.cli"]
PROMPT = "the theme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_port(proc: Proc) -> int:
    """The port a party started with `--listen 127.0.0.1:0` bound, read from its log line.
    (A port picked by the test and bound later can meanwhile be taken, e.g. as the source
    port of another worker's outgoing connection.)"""
    return int(proc.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))


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

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if m := re.search(pattern, self.text()):
                return m
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
        extra = ["--tls", str(tls)] if tls else []
        dealer = Proc(["dealer", "--listen", "127.0.0.1:0", "--timeout", "60", *extra, *dealer_args],
                      tmp_path / f"dealer{len(procs)}.log", _env())
        procs.append(dealer)
        dport = listening_port(dealer)
        server = Proc(["serve", "--listen", "127.0.0.1:0", "--dealer", f"127.0.0.1:{dport}",
                       "--private", str(model), "--timeout", "60", *extra, *server_args],
                      tmp_path / f"server{len(procs)}.log", _env())
        procs.append(server)
        return dealer, server, dport, listening_port(server)

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


@pytest.mark.slow
def test_three_processes_dcf_comparisons_greedy_equals_plain(parties):
    """A server that runs every comparison by DCF (`pspec serve --comparison dcf`): the
    client learns the protocol from the set-up, the dealer process generates the keys, and
    greedy secure decoding still equals plain greedy decoding."""
    start, model, _ = parties
    dealer, server, dport, sport = start(server_args=("--comparison", "dcf"))
    r = client(model, sport, dport, "--mode", "secure", "--temperature", "0", "--max-new-tokens", "3",
               "--ignore-eos")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["tokens"] == plain_tokens(model, 3)
    server.wait_for(r"session \w+: done", timeout=60)


def simulated_and_real(model, sport, dport, args) -> tuple[dict, dict]:
    """The --json results of `pspec generate *args` simulated in one process and run as
    the client of the three-process session."""
    sim = subprocess.run(PSPEC + ["generate", PROMPT, "--private", str(model), "--json", *args],
                         capture_output=True, text=True, timeout=600, env=_env())
    assert sim.returncode == 0, sim.stderr[-3000:]
    real = client(model, sport, dport, *args)
    assert real.returncode == 0, real.stderr[-3000:]
    return json.loads(sim.stdout), json.loads(real.stdout)


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_twenty_sessions_compile_once_and_memory_stays_bounded(parties):
    """20 client sessions with prompts of 20 different lengths against one server: every
    session's greedy token equals plain decoding, later sessions reuse the programs the
    first ones compiled (prefills padded to a few widths, `pass_width`) on both sides,
    and the server's resident memory after 20 sessions is at most 1.5x that after the
    first."""
    from pspec_jax.decode import generate_plain
    from pspec_jax.decode.sampling import Sampling
    from pspec_jax.models import load_model
    from pspec_jax.runtime.client import Client, PublicModel

    start, model, _ = parties
    _, server, dport, sport = start()
    bundle = load_model(str(model))
    public = PublicModel(bundle.config, bundle.tokenizer)
    client_ = Client(("127.0.0.1", sport), ("127.0.0.1", dport), timeout_s=60)
    greedy = Sampling(temperature=0.0)
    rss, seconds = [], []
    for k in range(20):
        ids = bundle.tokenizer.encode(PROMPT + " a" * (8 + k))  # 17 .. 36 tokens
        t0 = time.perf_counter()
        res = client_.generate(public, ids, mode="secure", max_new_tokens=1, sampling=greedy)
        seconds.append(time.perf_counter() - t0)
        assert res.tokens == generate_plain(bundle, ids, 1, greedy).tokens, k
        server.wait_for(rf"(session \w+: done.*\n.*){{{k + 1}}}", timeout=60)
        rss.append(rss_bytes(server.p.pid))
    assert len({len(bundle.tokenizer.encode(PROMPT + " a" * (8 + k))) for k in range(20)}) == 20
    assert rss[-1] <= 1.5 * rss[0], [r >> 20 for r in rss]
    # A warm session compiles nothing: far faster than the first (which compiled both sides).
    assert statistics.median(seconds[5:]) < 0.5 * seconds[0], seconds


@pytest.mark.heavy  # CI time: the seeded tree run (slow) checks the same property through three processes
def test_three_processes_seeded_sampling_equals_simulation(parties, tiny_folder):
    """A sampled POST run with an explicit seed (`--privacy paper`: every random draw is the
    client's — the drafts, the thresholds r_i and the draw from the opened row p_n) gives
    the simulation's tokens through three processes, although the dealer's keys differ.
    (`--privacy strict` samples inside 2PC from both parties' own keys: no client seed
    reproduces it, in the simulation or in a real run.)"""
    start, model, _ = parties
    _, _, dport, sport = start()
    public = tiny_folder("public", seed=4, vocab_size=264)  # another model: drafts get rejected
    args = ["--mode", "post", "--privacy", "paper", "--temperature", "1", "--seed", "11", "--gamma", "3",
            "--max-new-tokens", "8", "--ignore-eos", "--public", str(public)]
    sim, real = simulated_and_real(model, sport, dport, args)
    assert real["tokens"] == sim["tokens"] and real["accepted_per_step"] == sim["accepted_per_step"]
    assert 0 < sum(sim["accepted_per_step"]) < 3 * len(sim["accepted_per_step"])  # rejections happened


@pytest.mark.slow
def test_three_processes_tree_post(parties, tiny_folder):
    """Token-tree POST through three processes: a seeded sampled adaptive run (`--privacy
    paper`: every draw is the client's) gives the simulation's tokens and accepted paths
    (the server builds each pass's tree mask from the public shape and node count, and
    keeps its own copy of the opened path). Greedy tree POST through three processes is
    heavy (by hand): tests/test_post_smollm2.py (the demo with --tree on SmolLM2); in CI
    greedy tree POST = greedy plain runs in one process (tests/test_post_tree.py)."""
    start, model, _ = parties
    _, server, dport, sport = start()
    public = tiny_folder("public", seed=4, vocab_size=264)
    args = ["--mode", "post", "--privacy", "paper", "--temperature", "1", "--seed", "11", "--tree", "6",
            "--adaptive", "--max-new-tokens", "8", "--ignore-eos", "--public", str(public)]
    sim, real = simulated_and_real(model, sport, dport, args)
    assert real["tokens"] == sim["tokens"] and real["accepted_per_step"] == sim["accepted_per_step"]
    assert PROMPT not in server.text()


# ---------------------------------------------------------------------------------------
# Faults. Every case runs real processes, bounds every wait, kills what it started, and
# checks the one line the user sees (and that no traceback reaches them). The quick
# cases share one dealer and one server (`net`); the cases that need a whole secure run
# are marked slow.



def test_session_terms_round_trip_and_malformed_terms_are_refused():
    """The set-up's terms (ranges + comparison protocol): what the server sends is what the
    client reads; anything else is a transport error, not a crash or a silent default."""
    import numpy as np

    from mpc.transport import TransportError
    from pspec_jax.runtime.session import SessionTerms
    from pspec_jax.secure.ranges import ModelRanges

    ranges = ModelRanges(10.0, 1e-3, 2e5, 3.0, 20.0, 30.0)
    for comparison in ("kogge-stone", "dcf"):
        terms = SessionTerms(ranges, comparison)
        assert SessionTerms.from_message(terms.to_message()) == terms
        assert terms.mpc_config().comparison == comparison
    good = SessionTerms(ranges, "dcf").to_message()
    for bad in ([good[0]], [good[0], np.asarray([2], np.int64)], [good[0], np.asarray([1.0])],
                [good[0][:5], good[1]], [good[0], good[1], good[1]]):
        with pytest.raises(TransportError, match="malformed session terms"):
            SessionTerms.from_message(bad)
    with pytest.raises(ValueError, match="comparison must be one of"):
        SessionTerms(ranges, "yao")


def test_dealer_requests_are_pipelined_and_answered_in_order():
    """A party's batch of dealer requests: up to DEALER_PIPELINE on the wire before the
    first answer is read, the answers returned in request order; a malformed answer is
    a transport error."""
    import numpy as np

    from mpc.dealer import Request
    from mpc.transport import TransportError
    from pspec_jax.runtime.session import DEALER_PIPELINE, dealer_fetch

    class Dealer:  # answers each request with its nonce, as the dealer would: in order
        def __init__(self, bad=False):
            self.queue, self.log, self.bad = [], [], bad

        def send(self, msg):
            self.log.append("send")
            self.queue.append(int(msg[0][0]))

        def recv(self):
            self.log.append("recv")
            nonce = self.queue.pop(0)
            return [np.asarray([nonce], np.uint64)] * (2 if self.bad else 1)

    n = DEALER_PIPELINE + 8
    link = Dealer()
    words = dealer_fetch(link)([(i, Request("triple", ((2,),)), []) for i in range(n)])
    assert [int(w[0]) for w in words] == list(range(n))
    assert link.log[:DEALER_PIPELINE + 1] == ["send"] * DEALER_PIPELINE + ["recv"]
    in_flight = [link.log[:k].count("send") - link.log[:k].count("recv") for k in range(len(link.log) + 1)]
    assert max(in_flight) == DEALER_PIPELINE and in_flight[-1] == 0
    with pytest.raises(TransportError, match="sent 2 arrays"):
        dealer_fetch(Dealer(bad=True))([(0, Request("triple", ((2,),)), [])])


def established(port: int) -> int:
    """How many ESTABLISHED TCP connections have `port` as their local port (Linux)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def wait_until(cond, timeout: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def error_line(r) -> str:
    """The client failed with exit 2 and exactly one error line, no traceback."""
    err = r.stderr if isinstance(r, subprocess.CompletedProcess) else r
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("pspec: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _save_tiny(path, seed, **cfg):
    from conftest import byte_tokenizer
    from pspec_jax.models import tiny_model

    m = tiny_model("llama", seed=seed, **cfg)
    m.__class__(m.config, m.params, byte_tokenizer(), path.name).save(path)
    return m.config


class Net:
    """One dealer and one server (plaintext, loopback) shared by the quick fault cases."""

    def __init__(self, tmp):
        self.tmp, self.procs = tmp, []
        self.model, self.other = tmp / "private", tmp / "other"
        self.config = _save_tiny(self.model, seed=3, vocab_size=264)
        _save_tiny(self.other, seed=5, vocab_size=300)  # another shape: another fingerprint
        self.dealer, self.dport = self.start_dealer()
        self.server, self.sport = self.start_server(self.dport)

    def proc(self, args, name) -> Proc:
        p = Proc(args, self.tmp / f"{name}{len(self.procs)}.log", _env())
        self.procs.append(p)
        return p

    def start_dealer(self, *extra, port: int = 0) -> tuple[Proc, int]:
        p = self.proc(["dealer", "--listen", f"127.0.0.1:{port}", "--timeout", "60", *extra], "dealer")
        return p, listening_port(p)

    def start_server(self, dport, *extra) -> tuple[Proc, int]:
        p = self.proc(["serve", "--listen", "127.0.0.1:0", "--dealer", f"127.0.0.1:{dport}",
                       "--private", str(self.model), "--timeout", "60", *extra], "server")
        return p, listening_port(p)

    def probe(self, port=None) -> None:
        """A session handshake with the server succeeds (it is still accepting clients);
        the probe then leaves, which the server logs as a dropped session."""
        from mpc.transport import connect
        from pspec_jax.runtime.session import PROTOCOL_VERSION, model_fingerprint

        n = self.server.text().count("dropped")
        link = connect("127.0.0.1", port or self.sport, role="client", peer_role="server", tls=None,
                       session_id=os.urandom(16), version=PROTOCOL_VERSION,
                       fingerprint=model_fingerprint(self.config), timeout_s=30)
        link.close()
        wait_until(lambda: self.server.text().count("dropped") > n, 60, "the server to drop the probe")

    def close(self):
        for p in self.procs:
            p.kill()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    n = Net(tmp_path_factory.mktemp("net"))
    yield n
    n.close()


def test_fault_dealer_unreachable(net):
    """The client is told in one line, at once, that the dealer cannot be reached; the
    server drops the session the client opened and keeps serving."""
    t0 = time.time()
    r = client(net.model, net.sport, free_port(), "--mode", "secure", "--max-new-tokens", "2", timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    line = error_line(r)
    assert re.fullmatch(r"pspec: error: cannot reach the dealer at 127\.0\.0\.1:\d+: Connection refused", line), line
    assert time.time() - t0 < 90
    net.server.wait_for(r"session \w+: dropped after [\d.]+ s: client", timeout=30)
    net.probe()


def test_fault_model_fingerprint_mismatch(net):
    """A client whose private model has another shape is refused at the handshake; both
    sides name the fingerprints."""
    r = client(net.other, net.sport, net.dport, "--mode", "secure", "--max-new-tokens", "2", timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    line = error_line(r)
    assert "model fingerprints differ" in line and "sha256:" in line, line
    net.server.wait_for(r"refused a client: model fingerprints differ", timeout=30)


def test_fault_protocol_version_mismatch(net):
    """A peer speaking another protocol version is refused by the real server, with the reason."""
    from mpc.transport import HandshakeError, connect
    from pspec_jax.runtime.session import PROTOCOL_VERSION, model_fingerprint

    with pytest.raises(HandshakeError, match=rf"^server speaks protocol {PROTOCOL_VERSION}, client pspec/0$"):
        connect("127.0.0.1", net.sport, role="client", peer_role="server", tls=None, session_id=os.urandom(16),
                version="pspec/0", fingerprint=model_fingerprint(net.config), timeout_s=30)
    net.server.wait_for(rf"refused a client: client speaks protocol pspec/0, server {PROTOCOL_VERSION}", timeout=30)


def test_fault_garbage_connection(net):
    """Random bytes on the server's port are refused (one log line) and the server keeps
    accepting sessions."""
    n = net.server.text().count("refused a client")
    with socket.create_connection(("127.0.0.1", net.sport), timeout=10) as s:
        s.sendall(os.urandom(4096))
    wait_until(lambda: net.server.text().count("refused a client") > n, 30, "the server to refuse the garbage")
    line = [ln for ln in net.server.text().splitlines() if "refused a client" in ln][n]
    assert "not a pspec frame" in line or "handshake" in line, line
    assert "Traceback" not in net.server.text()
    net.probe()


def test_fault_stalled_server(net):
    """A "server" that completes the handshake and then never sends: the client's
    --timeout fires and it says so in one line."""
    import threading

    from mpc.transport import listen
    from pspec_jax.runtime.session import PROTOCOL_VERSION, model_fingerprint

    held = []
    with listen("127.0.0.1", 0, role="server", tls=None) as lst:
        def accept():
            held.append(lst.accept(peer_role="client", session_id=None, version=PROTOCOL_VERSION,
                                   fingerprint=model_fingerprint(net.config), timeout_s=120))

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            r = client(net.model, lst.port, net.dport, "--mode", "secure", "--max-new-tokens", "2",
                       "--timeout", "5", timeout=180)
        finally:
            t.join(5)
            for link in held:
                link.close()
    assert held, "the client never connected"
    assert r.returncode == 2, r.stderr[-3000:]
    assert error_line(r) == "pspec: error: no message from server within 5 s"


def exit_line(c, timeout: float) -> str:
    """Waits for client process `c` to exit with code 2; returns its one error line."""
    try:
        rc = c.p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the client did not exit: {c.text()[-2000:]}") from None
    assert rc == 2, c.text()[-3000:]
    return error_line(c.text())


def test_fault_server_killed_mid_run(net):
    """The server dies during a session: the client exits 2 well within its --timeout
    of seeing the loss, with one line naming the server."""
    server, sport = net.start_server(net.dport)
    c = net.proc(["generate", PROMPT, "--private", str(net.model), "--server", f"127.0.0.1:{sport}",
                  "--dealer", f"127.0.0.1:{net.dport}", "--mode", "secure", "--max-new-tokens", "30",
                  "--timeout", "20", "--json"], "client")
    wait_until(lambda: established(sport) > 0 or c.p.poll() is not None, 120, "the client to connect")
    time.sleep(1.0)
    server.kill()
    t0 = time.time()
    line = exit_line(c, 120)
    assert re.fullmatch(r"pspec: error: (server went away without closing the session"
                        r"|connection to server lost: .+)", line), line
    assert time.time() - t0 < 20 + 60  # the loss is seen at once; at worst after one compilation


@pytest.mark.slow  # ~85 s on 2 busy cores: the client notices only after its current compilation
def test_fault_dealer_killed_mid_session(net):
    """The dealer dies while a session runs: the client exits 2 with one line, the server
    drops the session and keeps serving (with a dealer restarted on the same port)."""
    n = net.server.text().count("dropped")
    c = net.proc(["generate", PROMPT, "--private", str(net.model), "--server", f"127.0.0.1:{net.sport}",
                  "--dealer", f"127.0.0.1:{net.dport}", "--mode", "secure", "--max-new-tokens", "30",
                  "--timeout", "60", "--json"], "client")
    # both the client and the server hold a link to the dealer
    wait_until(lambda: established(net.dport) >= 2 or c.p.poll() is not None, 120, "the session to start")
    time.sleep(1.0)
    net.dealer.kill()
    line = exit_line(c, 180)
    # when the client is receiving, the server's goodbye names the dealer; a client caught
    # sending sees only the broken link to the server
    assert re.fullmatch(r"pspec: error: (server closed the session: its link to the dealer failed \(.+\)"
                        r"|(dealer|server) (went away without closing the session|closed the session)"
                        r"|connection to (dealer|server) lost.*)", line), line
    wait_until(lambda: net.server.text().count("dropped") > n, 60, "the server to drop the session")
    assert "Traceback" not in net.server.text()
    net.dealer, _ = net.start_dealer(port=net.dport)
    net.probe()


@pytest.mark.slow
def test_fault_client_killed_then_next_client_served(net):
    """A client killed (SIGKILL) mid-run ends only its session: the server logs it as
    dropped (one line), shrugs off a garbage connection, and serves the next client
    correctly (greedy tokens equal the plain model's)."""
    n = net.server.text().count("dropped")
    c = net.proc(["generate", PROMPT, "--private", str(net.model), "--server", f"127.0.0.1:{net.sport}",
                  "--dealer", f"127.0.0.1:{net.dport}", "--mode", "secure", "--max-new-tokens", "30",
                  "--timeout", "60", "--json"], "client")
    wait_until(lambda: established(net.sport) > 0 or c.p.poll() is not None, 120, "the client to connect")
    time.sleep(3.0)
    assert c.p.poll() is None, c.text()[-2000:]
    c.kill()
    wait_until(lambda: net.server.text().count("dropped") > n, 300, "the server to drop the session")
    dropped = [ln for ln in net.server.text().splitlines() if "dropped" in ln][n:]
    assert len(dropped) == 1, dropped
    assert re.search(r"session \w+: dropped after [\d.]+ s: (client|connection to client)", dropped[0]), dropped
    with socket.create_connection(("127.0.0.1", net.sport), timeout=10) as s:
        s.sendall(os.urandom(512))
    want = plain_tokens(net.model, 2)
    r = client(net.model, net.sport, net.dport, "--mode", "secure", "--temperature", "0", "--max-new-tokens", "2",
               "--ignore-eos", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["tokens"] == want
    assert "Traceback" not in net.server.text()


@pytest.fixture(scope="module")
def tls_net(tmp_path_factory):
    """A dealer and a server with the keys of one CA (DIR1); DIR2 holds another CA's."""
    tmp = tmp_path_factory.mktemp("tls")
    for d in ("ca1", "ca2"):
        r = subprocess.run(PSPEC + ["keygen", str(tmp / d)], capture_output=True, text=True, timeout=120, env=_env())
        assert r.returncode == 0, r.stderr
    n = Net.__new__(Net)
    n.tmp, n.procs, n.model = tmp, [], tmp / "private"
    n.config = _save_tiny(n.model, seed=3, vocab_size=264)
    try:
        n.dealer, n.dport = n.start_dealer("--tls", str(tmp / "ca1"))
        n.server, n.sport = n.start_server(n.dport, "--tls", str(tmp / "ca1"))
        yield n
    finally:
        n.close()


def test_fault_tls_other_ca_refused(tls_net):
    """A client whose keys come from another CA is refused at the TLS handshake (one line)."""
    n = tls_net
    r = client(n.model, n.sport, n.dport, "--mode", "secure", "--max-new-tokens", "2", "--tls",
               str(n.tmp / "ca2"), timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    line = error_line(r)
    assert re.match(r"pspec: error: (TLS handshake with server failed|handshake with server failed"
                    r"|server refused the handshake)", line), line
    assert "certificate" in line.lower() or "tls" in line.lower(), line
    n.server.wait_for(r"refused a client: .*(TLS|certificate)", timeout=30)


@pytest.mark.slow
def test_tls_three_processes_greedy_equals_plain(tls_net):
    """TLS end to end: dealer, server and client with one CA's keys; greedy equals plain."""
    n = tls_net
    want = plain_tokens(n.model, 2)
    r = client(n.model, n.sport, n.dport, "--mode", "secure", "--temperature", "0", "--max-new-tokens", "2",
               "--ignore-eos", "--tls", str(n.tmp / "ca1"), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["tokens"] == want
    assert "plaintext" not in r.stderr.lower()
    n.server.wait_for(r"session \w+: done", timeout=60)
    assert "(TLS)" in n.server.text() and "(TLS)" in n.dealer.text()
