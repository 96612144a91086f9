"""Programs cut at their host callbacks (`mpc.stages.StagedProgram`): the same results as
the one compiled program, callbacks in program order, as few stages as the callbacks'
dependencies allow, and — the point — stages that JAX's persistent compilation cache
keeps, so a second process loads a party's programs instead of compiling them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

from mpc.stages import StagedProgram

ROOT = Path(__file__).resolve().parents[1]


class Host:
    """Ordered callbacks that log their calls: `echo` returns its operand plus one."""

    def __init__(self) -> None:
        self.calls = []

    def echo(self, name, x):
        def host(v):
            self.calls.append(name)
            return np.asarray(v) + 1

        return io_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True)


def _chain(host):
    def fn(x, y):
        a = host.echo("a", x * 2)      # step 0
        b = host.echo("b", y - 1)      # independent of a: step 0 too
        c = host.echo("c", a + b)      # needs both: step 1
        unused = jnp.sin(x) * 3        # nothing reads it: never computed
        del unused
        return {"out": c * 10, "a": a}, x  # an input as an output
    return fn


def test_staged_equals_the_compiled_program_with_callbacks_in_order():
    x, y = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 3))
    host_jit, host_staged = Host(), Host()
    want = jax.jit(_chain(host_jit))(x, y)
    staged = StagedProgram(_chain(host_staged), (x, y)).compile()
    got = staged(x, y)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    assert host_staged.calls == host_jit.calls == ["a", "b", "c"]
    # stage 0, host step 0 (a, b), stage 1, host step 1 (c), stage 2
    assert staged.stages == 3 and staged.host_calls == 3
    assert jax.tree_util.tree_structure(staged.out_info) == jax.tree_util.tree_structure(want)
    got2 = staged(x + 1, y)  # a second call runs the same stages on new inputs
    np.testing.assert_array_equal(got2[0]["out"], jax.jit(_chain(Host()))(x + 1, y)[0]["out"])


def test_a_callback_waits_for_the_one_before_it():
    """Program order is kept even where the data would allow a callback earlier: both
    parties number their messages and dealer requests that way."""
    host = Host()

    def fn(x):
        a = host.echo("a", x)
        b = host.echo("b", a)      # step 1
        c = host.echo("c", x * 3)  # ready at stage 0, but after b: step 1
        return b + c

    staged = StagedProgram(fn, (jnp.ones(3),)).compile()
    np.testing.assert_array_equal(staged(jnp.ones(3)), jax.jit(fn)(jnp.ones(3)))
    assert host.calls == ["a", "b", "c"] * 2 and staged.stages == 3


def test_callbacks_inside_nested_jit_are_inlined_and_without_callbacks_one_stage():
    host = Host()
    inner = jax.jit(lambda v: host.echo("inner", v * 2) + 1)
    fn = lambda x: inner(x) * 3  # noqa: E731
    staged = StagedProgram(fn, (jnp.ones(4),)).compile()
    np.testing.assert_array_equal(staged(jnp.ones(4)), (jnp.ones(4) * 2 + 1 + 1) * 3)
    assert staged.stages == 2
    plain = StagedProgram(lambda x: jnp.cos(x) + 1, (jnp.ones(4),)).compile()
    assert plain.stages == 1 and plain.host_calls == 0


def test_captured_constants_are_arguments_not_compiled_in():
    """A value a program closes over (possibly a secret of its party) is passed to the
    stage as an argument, so it is never written into a compiled program or the cache."""
    import re

    secret = np.random.default_rng(0).normal(size=100)
    staged = StagedProgram(lambda x: x * secret + 1, (jnp.ones(100),))
    (stage,) = staged._stages
    text = staged._lower(stage).as_text()
    assert not re.search(r"constant dense<[^>]*> : tensor<100xf64>", text)
    np.testing.assert_array_equal(staged.compile()(jnp.ones(100)), secret + 1)


def test_a_callback_inside_a_loop_is_refused():
    host = Host()

    def fn(x):
        return jax.lax.fori_loop(0, 3, lambda i, v: host.echo("loop", v), x)

    with pytest.raises(NotImplementedError, match="cannot be staged"):
        StagedProgram(fn, (jnp.ones(2),))


def test_a_callback_returning_the_wrong_shape_is_an_error():
    def fn(x):
        return io_callback(lambda v: np.zeros(5), jax.ShapeDtypeStruct((3,), jnp.float64), x, ordered=True)

    staged = StagedProgram(fn, (jnp.ones(3),)).compile()
    with pytest.raises(TypeError, match="expected float64"):
        staged(jnp.ones(3))


class Batcher:
    """Runs a group of host calls as one (`batch`), logging the groups."""

    def __init__(self) -> None:
        self.groups = []

    def run(self, calls):
        self.groups.append([fn.name for fn, _ in calls])
        return [np.asarray(args[0]) * 2 for _, args in calls]


class Batchable:
    def __init__(self, name, batch) -> None:
        self.name, self.batch = name, batch

    def __call__(self, v):
        return self.batch([(self, (v,))])[0]


def test_consecutive_callbacks_with_the_same_batch_run_as_one_call():
    batcher, host = Batcher(), Host()

    def doubled(name, x):
        return io_callback(Batchable(name, batcher.run), jax.ShapeDtypeStruct(x.shape, x.dtype), x, ordered=True)

    def fn(x):
        a, b = doubled("a", x), doubled("b", x + 1)  # one host step, one call
        c = host.echo("c", x)                        # a plain callback ends the group
        d = doubled("d", x + 2)
        return a + b + c + d

    staged = StagedProgram(fn, (jnp.ones(2),)).compile()
    np.testing.assert_array_equal(staged(jnp.ones(2)), 2 + 4 + 2 + 6)
    assert batcher.groups == [["a", "b"], ["d"]] and host.calls == ["c"] and staged.stages == 2


_PARTY_RUN = """
import json, sys
import jax
sys.path.insert(0, {root!r})
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name))
import numpy as np
import mpc
from mpc.protocols import compare as C, linear as L
from tests.test_party import run_parties

@mpc.secure_jit
def program(ctx, x, y):
    xs, ys = ctx.share(x, owner=0), ctx.share(y, owner=1)
    return ctx.reveal(C.b2a(ctx, C.lt(ctx, L.mul_fixed(ctx, xs, ys), ys)))

x, y = np.linspace(-2, 2, 12), np.linspace(1, -1, 12)
outs, _ = run_parties(lambda ctx, p: program(ctx, x if p == 0 else 0 * x, y if p == 1 else 0 * y))
print(json.dumps({{"out": np.asarray(outs[0]).tolist(),
                   "hits": hits.count("/jax/compilation_cache/cache_hits"),
                   "requests": hits.count("/jax/compilation_cache/compile_requests_use_cache")}}))
"""


def test_a_second_process_loads_a_partys_programs_from_the_persistent_cache(tmp_path):
    """Two processes, each running both parties of a secure program (callbacks to the peer
    and to the dealer in every party's program): the first compiles and writes every
    stage, the second finds every one of them in the cache and computes the same."""
    script = _PARTY_RUN.format(root=str(ROOT), cache=str(tmp_path / "cache"))
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT,
                           env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["out"] == warm["out"] == (np.linspace(-2, 2, 12) * np.linspace(1, -1, 12)
                                          < np.linspace(1, -1, 12)).astype(int).tolist()
    # (a stage both parties' programs share is compiled once already in the first process)
    assert cold["requests"] > 10 and cold["hits"] < cold["requests"] / 4
    assert warm["hits"] == warm["requests"] == cold["requests"]
