"""The Optax distillation trainer: jit-compiled step, Orbax checkpoints, exact resume.

optimizer = chain(clip_by_global_norm, adamw(warm-up + cosine schedule, weight decay on
matrices only)); one step = value_and_grad of the masked mean divergence, then update.
Only the student's trained leaves (a flat {path: array} dict, see students.py) carry
gradients and optimizer state; the rest of its params are passed in, never closed over.

Batches are a pure function of (seed, step) — rows drawn from the pool with
numpy's Generator([seed, step]) — so a run resumed from a checkpoint at step s sees the
same batches as an uninterrupted one, and ends with bit-identical params and optimizer
state. On-policy pools are regenerated every `refresh` steps from the current student
and saved with the checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import data as data_mod
from distill.losses import LOSSES, Target, distill_loss
from distill.students import Student, effective, merge
from pspec_jax.errors import UserError

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run (frozen; validated at construction)."""

    loss: str = "tv"
    beta: float = 0.5  # JSD(β)
    temperature: float = 1.0
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.01
    clip: float = 1.0
    batch: int = 8
    steps: int = 100
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    refresh: int = 0  # on-policy: regenerate the pool every `refresh` steps (0: never)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss {self.loss!r} (expected one of {', '.join(LOSSES)})")
        if not 0.0 < self.beta < 1.0:
            raise UserError(f"jsd beta must be in (0, 1), got {self.beta}")
        if not self.temperature > 0:
            raise UserError(f"temperature must be > 0, got {self.temperature}")
        for name in ("batch", "steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        for name in ("checkpoint_every", "refresh", "warmup"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=tc.lr, warmup_steps=max(1, min(tc.warmup, tc.steps - 1)),
        decay_steps=max(tc.steps, 2), end_value=tc.lr * tc.min_lr_ratio)
    decay_mask = lambda params: jax.tree_util.tree_map(lambda x: x.ndim >= 2, params)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(tc.clip),
                       optax.adamw(schedule, weight_decay=tc.weight_decay, mask=decay_mask))


def make_step(student_config, tc: TrainConfig, tx: optax.GradientTransformation):
    """The jitted train step: (trained, opt_state, base, batch) -> (trained, opt_state, loss)."""
    from pspec_jax.models import arch

    def loss_fn(trained, base, batch):
        params = effective(merge(trained, base))
        logits, _ = arch.forward(student_config, params, batch["inputs"])  # (B, L, V)
        return distill_loss(tc.loss, Target(batch["idx"], batch["prob"]), logits, batch["mask"],
                            temperature=tc.temperature, beta=tc.beta)

    @jax.jit
    def step(trained, opt_state, base, batch):
        loss, grads = jax.value_and_grad(loss_fn)(trained, base, batch)
        updates, opt_state = tx.update(grads, opt_state, trained)
        return optax.apply_updates(trained, updates), opt_state, loss

    @jax.jit
    def eval_loss(trained, base, batch):
        return loss_fn(trained, base, batch)

    return step, eval_loss


def batch_rows(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """The pool rows of step `step`: a pure function of (seed, step)."""
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=n < batch)


def _device_batch(b: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {"inputs": jnp.asarray(b["inputs"], jnp.int32), "idx": jnp.asarray(b["idx"], jnp.int32),
            "prob": jnp.asarray(b["prob"], F32), "mask": jnp.asarray(b["mask"], bool)}


# ----------------------------------------------------------------- checkpoints (Orbax)
class Checkpoints:
    """Orbax CheckpointManager over {"trained", "opt", "step"} (+ an on-policy pool file)."""

    def __init__(self, directory: str | Path, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._ocp = ocp
        self.mngr = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest(self) -> int | None:
        return self.mngr.latest_step()

    def save(self, step: int, state: dict[str, Any], pool: data_mod.Pool | None = None) -> None:
        self.mngr.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self.mngr.wait_until_finished()
        if pool is not None:
            pool.save(self.dir / f"pool-{step}.npz")

    def restore(self, step: int, abstract: dict[str, Any]) -> tuple[dict[str, Any], data_mod.Pool | None]:
        target = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype), abstract)
        state = self.mngr.restore(step, args=self._ocp.args.StandardRestore(target))
        pf = self.dir / f"pool-{step}.npz"
        return state, (data_mod.Pool.load(pf) if pf.exists() else None)

    def close(self) -> None:
        self.mngr.close()


# ----------------------------------------------------------------- the loop
@dataclasses.dataclass
class RunResult:
    params: Any  # the student's params after training (LoRA factors unmerged: see effective())
    losses: list[float]
    steps: int
    seconds: float
    tokens: int  # positions processed after the first (compiling) step

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def train(student: Student, pool: data_mod.Pool, tc: TrainConfig, *,
          ckpt_dir: str | Path | None = None, resume: bool = True,
          stop_at: int | None = None,
          onpolicy: Callable[[Any, int], data_mod.Pool] | None = None,
          deadline: float | None = None,
          progress: bool = True, log: Callable[[str], None] = lambda s: None) -> RunResult:
    """Trains `student` on `pool` for tc.steps steps (or up to `stop_at`, for tests).

    Args:
      student: the Student (config, params, trainable mask).
      pool: the data; replaced by `onpolicy(params, step)` at step 0 and every tc.refresh
        steps when `onpolicy` is given.
      tc: the hyper-parameters.
      ckpt_dir: Orbax checkpoints go here (every tc.checkpoint_every steps and at the end);
        with `resume`, training continues from the latest one.
      stop_at: stop after this step (the schedule still spans tc.steps).
      deadline: a time.time() after which training stops early (checkpoint + result).
      progress: show a tqdm bar with the loss and tokens/s.
    """
    from tqdm.auto import tqdm

    tx = make_optimizer(tc)
    trained, base = student.split()
    opt_state = tx.init(trained)
    state = {"trained": trained, "opt": opt_state, "step": jnp.asarray(0, jnp.int32)}
    ckpt = Checkpoints(ckpt_dir) if ckpt_dir is not None else None
    start = 0
    if ckpt is not None and resume and ckpt.latest() is not None:
        start = int(ckpt.latest())
        state, saved_pool = ckpt.restore(start, state)
        if saved_pool is not None:
            pool = saved_pool
        log(f"resumed from {ckpt.dir} at step {start}")
    trained, opt_state = state["trained"], state["opt"]
    step_fn, _ = make_step(student.config, tc, tx)
    end = tc.steps if stop_at is None else min(stop_at, tc.steps)
    losses: list[float] = []
    L = pool.seq_len
    bar = tqdm(total=end, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"distill {student.name} {tc.loss}")
    t0 = time.perf_counter()
    tokens = 0
    for s in range(start, end):
        if onpolicy is not None and (s == 0 or (tc.refresh and s % tc.refresh == 0)) and \
                not (s == start and start > 0):
            pool = onpolicy(effective(merge(trained, base)), s)
        rows = batch_rows(tc.seed, s, len(pool), tc.batch)
        trained, opt_state, loss = step_fn(trained, opt_state, base, _device_batch(pool.batch(rows)))
        loss = float(loss)
        if not np.isfinite(loss):
            raise UserError(f"the loss became {loss} at step {s}; lower the learning rate")
        losses.append(loss)
        if s == start:  # throughput excludes the first step (compilation)
            t0 = time.perf_counter()
        else:
            tokens += tc.batch * L
        dt = time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / max(dt, 1e-9):.0f}")
        done = s + 1
        if deadline is not None and time.time() > deadline and done < end:
            log(f"time limit reached after step {done} of {end}")
            end = done
        if ckpt is not None and (done == end or (tc.checkpoint_every and done % tc.checkpoint_every == 0)):
            ckpt.save(done, {"trained": trained, "opt": opt_state, "step": jnp.asarray(done, jnp.int32)},
                      pool if onpolicy is not None else None)
        if done == end:
            break
    bar.close()
    if ckpt is not None:
        ckpt.close()
    return RunResult(merge(trained, base), losses, len(losses), time.perf_counter() - t0, tokens)


def mean_loss(student: Student, params: Any, pool: data_mod.Pool, tc: TrainConfig,
              rows: np.ndarray | None = None) -> float:
    """The divergence of `params` on pool rows (all by default), in batches of tc.batch."""
    tx = make_optimizer(tc)
    _, eval_loss = make_step(student.config, tc, tx)
    trained, base = student.split(params)
    rows = np.arange(len(pool)) if rows is None else rows
    tot, cnt = 0.0, 0.0
    for s in range(0, len(rows), tc.batch):
        r = rows[s:s + tc.batch]
        b = pool.batch(r)
        m = float(b["mask"].sum())
        tot += float(eval_loss(trained, base, _device_batch(b))) * m
        cnt += m
    return tot / max(cnt, 1.0)
