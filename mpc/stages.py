"""A program cut at its host callbacks into pure stages the host runs in turn.

A party's secure program talks to its peer and to the dealer through ordered host
callbacks (`io_callback`, `mpc.channel` and `mpc.dealer`). Compiled as one XLA program
it cannot be kept: JAX's persistent compilation cache refuses programs with host
callbacks (their Python objects live in one process), so every process compiled every
program again. `StagedProgram` traces the program once and cuts it at its callbacks:

* callback k runs at host step h_k = max(h_{k−1}, the stage of its latest operand) —
  never before the callback before it, so messages and dealer requests keep program
  order (both parties number them that way) — and its results are ready from stage
  h_k + 1;
* an operation runs in the earliest stage whose inputs are ready (the latest stage of
  its operands), and only if a callback or an output needs it.

The host runs stage 0, the callbacks of step 0 in program order, stage 1, and so on;
no XLA thread ever waits on a socket. Consecutive callbacks of a step whose functions
share a `batch` attribute run as one call of it (a party's dealer requests, which the
runtime pipelines). A stage is an ordinary jitted program without effects — what the
persistent cache holds — and a program has about as many stages as rounds (each
opening waits for the previous one's result). A program without callbacks is one
stage: itself. Callbacks inside loops or conditionals cannot be cut out and are
refused (the protocols unroll their rounds in Python); nested jitted functions that
hold callbacks are inlined.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import threading
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend import core

_CALLBACK = "io_callback"
_INLINED = {"jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr"}


def _has_host_effect(eqn) -> bool:
    return any(type(e).__name__ in ("OrderedIOEffect", "IOEffect") for e in eqn.effects)


@dataclasses.dataclass(eq=False)
class _Op:
    """One operation of the flattened program: a jaxpr equation (pure) or a callback;
    `ins`: value numbers or literals, `outs`: value numbers (None: unused)."""

    eqn: Any
    ins: list
    outs: list
    level: int = 0  # pure: its stage; callback: its host step


class _Flat:
    """The program as one list of operations over numbered values (nested jitted
    functions that hold callbacks inlined)."""

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.consts: dict[int, Any] = {}
        self.avals: dict[int, Any] = {}
        self._n = 0

    def new(self, aval) -> int:
        self._n += 1
        self.avals[self._n] = aval
        return self._n

    def add(self, jaxpr, consts, ins: list) -> list:
        env: dict = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.new(v.aval)
            self.consts[env[v]] = c
        env.update(zip(jaxpr.invars, ins))

        def read(a):
            return a if isinstance(a, core.Literal) else env[a]

        for eqn in jaxpr.eqns:
            args = [read(a) for a in eqn.invars]
            name = eqn.primitive.name
            if _has_host_effect(eqn) and name != _CALLBACK:
                if name not in _INLINED:
                    raise NotImplementedError(
                        f"a host callback inside `{name}` cannot be staged: a protocol's rounds must be "
                        "unrolled in Python, not inside a loop or conditional")
                inner = eqn.params[_INLINED[name]]
                inner_jaxpr, inner_consts = ((inner.jaxpr, inner.consts) if isinstance(inner, core.ClosedJaxpr)
                                             else (inner, ()))
                outs = self.add(inner_jaxpr, inner_consts, args)
            else:
                outs = [None if isinstance(v, core.DropVar) else self.new(v.aval) for v in eqn.outvars]
                self.ops.append(_Op(eqn, args, outs))
            for v, o in zip(eqn.outvars, outs):
                if not isinstance(v, core.DropVar):
                    env[v] = o
        return [read(a) for a in jaxpr.outvars]


def _ref(env: dict, a):
    return a.val if isinstance(a, core.Literal) else env[a]


def _stage_function(ops: Sequence[_Op], ins: Sequence[int], outs: Sequence[int]) -> Callable:
    def run(*vals):
        env = dict(zip(ins, vals))
        for op in ops:
            params = op.eqn.primitive.get_bind_params(op.eqn.params)
            with op.eqn.ctx.manager:
                ans = op.eqn.primitive.bind(*[_ref(env, a) for a in op.ins], **params)
            for o, v in zip(op.outs, ans if op.eqn.primitive.multiple_results else [ans]):
                if o is not None:
                    env[o] = v
        return [env[o] for o in outs]

    return run


@dataclasses.dataclass
class _Stage:
    fn: Callable | None   # its function over its inputs (the whole program: its lowering); None once lowered
    ins: list[int]        # the values it reads
    outs: list[int]       # the values it makes that later stages, callbacks or outputs read
    callbacks: list[_Op]  # the host step after it, in program order
    compiled: Any = None


class StagedProgram:
    """`fn(*args)` traced once and cut into stages (module docstring). `out_info`: the
    outputs' shapes (a pytree of `jax.ShapeDtypeStruct`); `stages`: how many;
    `compile(executor=None)` compiles every stage (on `executor`'s threads if given; a
    stage with the same program as one compiled before, in this or another process
    with the persistent cache on, is loaded, not compiled); calling runs it."""

    def __init__(self, fn: Callable, args) -> None:
        leaves, self._in_tree = jax.tree_util.tree_flatten(args)
        traced = jax.jit(lambda *xs: fn(*jax.tree_util.tree_unflatten(self._in_tree, xs))).trace(*leaves)
        self.out_info = traced.out_info
        closed = traced.jaxpr
        # Without callbacks (or captured constants) the program is its own only stage,
        # lowered from this trace. Captured constants go through the stages, which pass
        # them as arguments: no value a program closes over is written into a compiled
        # program, or into the persistent cache.
        whole = not closed.consts and not any(map(_has_host_effect, closed.jaxpr.eqns))
        self._whole = _Stage(traced.lower, [], [], []) if whole else None
        if self._whole is not None:
            self._stages = [self._whole]
            return
        self._out_tree = jax.tree_util.tree_structure(traced.out_info)
        flat = _Flat()
        self._inputs = [flat.new(v.aval) for v in closed.jaxpr.invars]
        self._outputs = flat.add(closed.jaxpr, closed.consts, self._inputs)
        self._consts = flat.consts
        self._stages = self._cut(flat)
        self._drops = self._lifetimes()

    @property
    def stages(self) -> int:
        return len(self._stages)

    @property
    def host_calls(self) -> int:
        return sum(len(s.callbacks) for s in self._stages)

    def _cut(self, flat: _Flat) -> list[_Stage]:
        level: dict[int, int] = {}

        def at(a) -> int:
            return 0 if isinstance(a, core.Literal) else level.get(a, 0)

        step = 0
        for op in flat.ops:
            ready = max((at(a) for a in op.ins), default=0)
            if op.eqn.primitive.name == _CALLBACK:
                step = op.level = max(step, ready)
                ready = step + 1
            else:
                op.level = ready
            for o in op.outs:
                if o is not None:
                    level[o] = ready
        # Only what a callback or an output needs is computed.
        needed = {a for a in self._outputs if not isinstance(a, core.Literal)}
        kept = []
        for op in reversed(flat.ops):
            if op.eqn.primitive.name == _CALLBACK or any(o in needed for o in op.outs):
                needed.update(a for a in op.ins if not isinstance(a, core.Literal))
                kept.append(op)
        kept.reverse()
        n_stages = 1 + max((op.level + 1 for op in kept if op.eqn.primitive.name == _CALLBACK), default=0)
        pure = [[] for _ in range(n_stages)]
        calls = [[] for _ in range(n_stages)]
        for op in kept:
            (calls if op.eqn.primitive.name == _CALLBACK else pure)[op.level].append(op)
        # a value is read by the stage (or host step) at time 2s (2s + 1), or at the end
        made_in = {o: s for s in range(n_stages) for op in pure[s] for o in op.outs if o is not None}
        read_after: dict[int, set[int]] = {}
        for s in range(n_stages):
            for op in pure[s]:
                for a in op.ins:
                    if not isinstance(a, core.Literal) and made_in.get(a) != s:
                        read_after.setdefault(s, set()).add(a)
        exported: set[int] = set()
        for s in range(n_stages):
            for op in calls[s]:
                exported.update(a for a in op.ins if not isinstance(a, core.Literal))
        exported.update(a for a in self._outputs if not isinstance(a, core.Literal))
        for reads in read_after.values():
            exported.update(reads)
        stages = []
        for s in range(n_stages):
            ins = sorted(read_after.get(s, ()))
            outs = [o for op in pure[s] for o in op.outs if o is not None and o in exported]
            stages.append(_Stage(_stage_function(pure[s], ins, outs), ins, outs, calls[s]))
        self._avals = flat.avals
        return stages

    def _lifetimes(self) -> list[list[int]]:
        """Per stage, the values nothing reads after it and its host step (so a run
        holds only live values); outputs stay."""
        last: dict[int, int] = {}
        for s, stage in enumerate(self._stages):
            for a in stage.ins:
                last[a] = 2 * s
            for op in stage.callbacks:
                for a in op.ins:
                    if not isinstance(a, core.Literal):
                        last[a] = 2 * s + 1
        for a in self._outputs:
            if not isinstance(a, core.Literal):
                last[a] = len(self._stages) * 2
        self._read = set(last)
        drops = [[] for _ in self._stages]
        for a, t in last.items():
            if t < len(self._stages) * 2:
                drops[t // 2].append(a)
        return drops

    def compile(self, executor: concurrent.futures.Executor | None = None) -> "StagedProgram":
        """Lower every stage here, compile them on `executor` (default: a pool of one thread
        per core; XLA compiles outside the GIL) — waiting for them only without one."""
        jobs = []
        for stage in self._stages:
            if stage.compiled is None and (stage is self._whole or stage.outs):
                lowered = self._lower(stage)
                stage.fn = None  # the trace it holds is not needed again (a long-lived server's memory)
                jobs.append((stage, (executor or _pool()).submit(lowered.compile, _compiler_options())))
        for stage, job in jobs:
            stage.compiled = job if executor is not None else job.result()
        return self

    def _lower(self, stage: _Stage):
        if stage is self._whole:
            return stage.fn()
        avals = [jax.ShapeDtypeStruct(self._avals[a].shape, self._avals[a].dtype, weak_type=self._avals[a].weak_type)
                 for a in stage.ins]
        return jax.jit(stage.fn).lower(*avals)

    def _ready(self, stage: _Stage):
        if stage.compiled is None:
            self.compile()
        if isinstance(stage.compiled, concurrent.futures.Future):
            stage.compiled = stage.compiled.result()
        return stage.compiled

    def _host_step(self, callbacks: Sequence[_Op], env: dict) -> None:
        """A host step's callbacks in program order; consecutive ones whose functions have
        the same `batch` (a party's dealer requests) as one call `batch([(function, args),
        ...]) -> [result, ...]`, which may overlap their round trips."""
        i = 0
        while i < len(callbacks):
            batch, j = _batch_of(callbacks[i]), i + 1
            while batch is not None and j < len(callbacks) and _batch_of(callbacks[j]) == batch:
                j += 1
            group = callbacks[i:j]
            if batch is None:
                results = [callbacks[i].eqn.params["callback"](*[_ref(env, a) for a in callbacks[i].ins])]
            else:
                calls = []
                for op in group:
                    flat_callback = op.eqn.params["callback"]
                    args, _ = jax.tree_util.tree_unflatten(flat_callback.in_tree, [_ref(env, a) for a in op.ins])
                    calls.append((flat_callback.callback_func, args))
                results = [jax.tree_util.tree_leaves(r) for r in batch(calls)]
            for op, result in zip(group, results):
                for o, r, aval in zip(op.outs, result, op.eqn.params["result_avals"]):
                    if o in self._read:
                        env[o] = _checked(r, aval)
            i = j

    def __call__(self, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != self._in_tree:
            raise TypeError(f"staged program called with {tree}, traced with {self._in_tree}")
        if self._whole is not None:
            return self._ready(self._whole)(*leaves)
        # The host runs at most one program ahead of the device: a program's first host step
        # (its dealer draws, which wait on nothing) would otherwise pile up material for
        # every program the caller dispatches before the first one has computed.
        jax.block_until_ready(getattr(_dispatched, "outputs", None))
        env: dict[int, Any] = dict(self._consts)
        env.update(zip(self._inputs, leaves))
        for s, stage in enumerate(self._stages):
            if stage.outs:
                env.update(zip(stage.outs, self._ready(stage)(*[env[a] for a in stage.ins])))
            self._host_step(stage.callbacks, env)
            for a in self._drops[s]:
                env.pop(a, None)
        outputs = [_ref(env, a) for a in self._outputs]
        _dispatched.outputs = outputs
        return jax.tree_util.tree_unflatten(self._out_tree, outputs)


_dispatched = threading.local()  # this thread's last staged call's outputs


@functools.cache
def _compiler_options() -> dict:
    """LLVM at -O1 on CPU: measured on SmolLM2's passes (T = 1 and 8), the programs run as
    fast as at XLA's default -O2 and compile ~15% faster (a party's small stages ~20%)."""
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else {}


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="pspec-compile")


def _batch_of(op: _Op):
    return getattr(op.eqn.params["callback"].callback_func, "batch", None)


def _checked(value, aval) -> np.ndarray:
    out = np.asarray(value)
    if out.shape != tuple(aval.shape) or out.dtype != aval.dtype:
        raise TypeError(f"host callback returned {out.dtype}{list(out.shape)}, expected "
                        f"{aval.dtype}{list(aval.shape)}")
    return out
