"""Distillation divergences between the teacher's p and the student's q, as pure functions.

Every loss compares two distributions given on the same support along the last axis and
returns one value per position (the caller masks and averages). The support is either
the whole vocabulary (full teacher rows) or the teacher's top-k tokens plus one "rest"
bucket holding the remaining mass (`Target` below): the divergence is then the exact
divergence between the two distributions coarsened onto those k + 1 outcomes, a lower
bound of the full one that becomes exact as the rest mass goes to 0.

References: DistillSpec (Zhou et al. 2024, "DistillSpec: Improving Speculative Decoding
via Knowledge Distillation") for JSD(β) and TV as the divergence that matches speculative
acceptance, α = 1 − TV(p, q) (Leviathan et al. 2023, Corollary 3.6).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

F32 = jnp.float32
# p entries this small are treated as this small inside log p (reverse KL / JSD of a
# coarsened target whose rest bucket underflowed): keeps the loss finite, changes
# nothing measurable (q·log(q/1e-30) only matters where q itself is >1e-30).
_P_FLOOR = F32(1e-30)

LOSSES = ("tv", "fkl", "rkl", "jsd")


# ----------------------------------------------------------------- divergences on a support
def total_variation(p: jax.Array, q: jax.Array) -> jax.Array:
    """TV(p, q) = ½ Σ_x |p(x) − q(x)| over the last axis (a sum, not a mean); = 1 − α."""
    return F32(0.5) * jnp.sum(jnp.abs(p - q), axis=-1)


def forward_kl(p: jax.Array, q: jax.Array, *, log_q: jax.Array | None = None) -> jax.Array:
    """KL(p ‖ q) = Σ p log(p / q): mass-covering (the POST paper's cross-entropy up to H(p)).

    `log_q` (the same shape), when given, is used instead of log(q) (stable from logits).
    """
    log_q = jnp.log(q) if log_q is None else log_q
    return jnp.sum(xlogy(p, p) - p * log_q, axis=-1)


def reverse_kl(p: jax.Array, q: jax.Array, *, log_q: jax.Array | None = None) -> jax.Array:
    """KL(q ‖ p) = Σ q log(q / p): mode-seeking."""
    log_q = jnp.log(q) if log_q is None else log_q
    return jnp.sum(q * (log_q - jnp.log(jnp.maximum(p, _P_FLOOR))), axis=-1)


def jensen_shannon(p: jax.Array, q: jax.Array, *, beta: float = 0.5) -> jax.Array:
    """JSD(β) = β KL(p ‖ m) + (1 − β) KL(q ‖ m) with m = β p + (1 − β) q (DistillSpec).

    β → 0 approaches forward-KL-like behaviour scaled by β, β → 1 reverse; β = ½ is the
    symmetric Jensen–Shannon divergence (at most log 2).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
    b = F32(beta)
    m = b * p + (F32(1.0) - b) * q
    log_m = jnp.log(jnp.maximum(m, _P_FLOOR))
    kl_pm = jnp.sum(xlogy(p, p) - p * log_m, axis=-1)
    kl_qm = jnp.sum(xlogy(q, q) - q * log_m, axis=-1)
    return b * kl_pm + (F32(1.0) - b) * kl_qm


# ----------------------------------------------------------------- teacher targets
class Target(NamedTuple):
    """Teacher distributions at some positions, top-k form.

    idx: (..., k) int32 token ids of the teacher's k most probable tokens.
    prob: (..., k) float32 their probabilities; the rest mass is 1 − Σ prob.
    With k = V and idx = arange(V) this is the full row.
    """

    idx: jax.Array
    prob: jax.Array


def topk_target(teacher_logits: jax.Array, k: int, *, temperature: float = 1.0) -> Target:
    """The top-`k` Target of softmax(teacher_logits / temperature) (k ≥ V: full rows)."""
    logp = jax.nn.log_softmax(teacher_logits.astype(F32) / F32(temperature), axis=-1)
    V = logp.shape[-1]
    if k >= V:
        idx = jnp.broadcast_to(jnp.arange(V, dtype=jnp.int32), logp.shape)
        return Target(idx, jnp.exp(logp))
    top, idx = jax.lax.top_k(logp, k)  # (..., k) sorted descending
    return Target(idx.astype(jnp.int32), jnp.exp(top))


def coarsen(target: Target, student_logits: jax.Array, *, temperature: float = 1.0
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """p, q, log q on the target's support: its k tokens plus a rest bucket (k + 1).

    Args:
      target: the teacher's Target (..., k).
      student_logits: (..., V) float32.
      temperature: divides the student logits (the target was made at the same one).
    Returns:
      p (..., k+1), q (..., k+1), log_q (..., k+1); log q of the rest bucket comes from a
      logsumexp over the tokens outside the support, so it stays finite and exact.
    """
    logq_all = jax.nn.log_softmax(student_logits.astype(F32) / F32(temperature), axis=-1)  # (..., V)
    V, k = logq_all.shape[-1], target.idx.shape[-1]
    logq_k = jnp.take_along_axis(logq_all, target.idx, axis=-1)  # (..., k)
    p_k = target.prob.astype(F32)
    if k >= V:  # full rows: the rest bucket is empty on both sides
        zero = jnp.zeros(p_k.shape[:-1] + (1,), F32)
        log_zero = jnp.full(p_k.shape[:-1] + (1,), -jnp.inf, F32)
        return (jnp.concatenate([p_k, zero], -1), jnp.concatenate([jnp.exp(logq_k), zero], -1),
                jnp.concatenate([logq_k, log_zero], -1))
    in_k = jnp.zeros(logq_all.shape, bool)
    in_k = jnp.put_along_axis(in_k, target.idx, True, axis=-1, inplace=False)
    logq_rest = jax.nn.logsumexp(jnp.where(in_k, F32(-jnp.inf), logq_all), axis=-1, keepdims=True)
    p_rest = jnp.maximum(F32(1.0) - jnp.sum(p_k, axis=-1, keepdims=True), F32(0.0))
    log_q = jnp.concatenate([logq_k, logq_rest], -1)
    return jnp.concatenate([p_k, p_rest], -1), jnp.exp(log_q), log_q


def position_loss(kind: str, target: Target, student_logits: jax.Array, *,
                  temperature: float = 1.0, beta: float = 0.5) -> jax.Array:
    """The divergence `kind` (tv | fkl | rkl | jsd) at each position (...,)."""
    p, q, log_q = coarsen(target, student_logits, temperature=temperature)
    if kind == "tv":
        return total_variation(p, q)
    if kind == "fkl":
        # xlogy-safe: where p = 0 (empty rest bucket) the product p·log q must be 0, not nan.
        return forward_kl(p, q, log_q=jnp.where(p > 0, log_q, F32(0.0)))
    if kind == "rkl":
        return reverse_kl(p, q, log_q=jnp.where(q > 0, log_q, F32(0.0)))
    if kind == "jsd":
        return jensen_shannon(p, q, beta=beta)
    raise ValueError(f"unknown loss {kind!r} (expected one of {', '.join(LOSSES)})")


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Σ values·mask / max(Σ mask, 1)."""
    m = mask.astype(F32)
    return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), F32(1.0))


def distill_loss(kind: str, target: Target, student_logits: jax.Array, mask: jax.Array, *,
                 temperature: float = 1.0, beta: float = 0.5) -> jax.Array:
    """Mean divergence over the positions where `mask` is set (a scalar)."""
    return masked_mean(position_loss(kind, target, student_logits, temperature=temperature,
                                     beta=beta), mask)


LOSS_FNS: dict[str, Callable[..., jax.Array]] = {
    "tv": total_variation, "fkl": forward_kl, "rkl": reverse_kl, "jsd": jensen_shannon}
