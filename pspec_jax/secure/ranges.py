"""The private model's value ranges, measured on public calibration text, and the
comparison widths, norm ranges and temperature bound derived from them.

The secure protocols compare on reduced widths (a comparison that examines fewer bits
costs fewer rounds and bytes) and normalise over a fixed range of variances; a value
outside its range wraps around silently. Generic constants cannot fit every model:
SmolLM2's first-token rows have variances near 8e5 and its SiLU inputs reach the hundreds,
GPT-2's logits spread wider than SmolLM2's. So the server measures its own model once,
when it prepares it (`measure`), multiplies each range by `MARGIN`, and derives the session
config from the result (`session_config`); the client receives the measured ranges with
the session set-up and derives the same config.

What is measured (maxima over every layer, position and calibration sequence):
  act_max       max |x| into the MLP activation (GeLU / SiLU)
  norm_var_min  min of the rows' variances into a norm (mean of squares for RMSNorm)
  norm_var_max  max of the same
  norm_mean_max max |row mean| into a LayerNorm (0 for RMSNorm models)
  score_spread  max over attention rows of (max − min) of the scaled scores (unmasked)
  logit_spread  max over rows of (max − min) of the logits

What the calibration text may be: any public text of the kind the model will see (the
default is a few paragraphs of plain English, code and numbers, `CALIBRATION_TEXT`). It
must not be a client's prompt: the ranges reach the client, and they are a few numbers
about the model's activations, disclosed as part of the session config (README, security
model). Inputs outside the margin keep their documented behaviour (a comparison may wrap,
a norm's error grows); the margin makes that unlikely, not impossible.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

import mpc
from mpc.approx import CoarseCompare
from pspec_jax.errors import UserError
from pspec_jax.models import arch
from pspec_jax.models.config import ModelConfig
from pspec_jax.models.ops import PlainOps

MARGIN = 2.0  # each measured magnitude, spread and variance is multiplied by this

CALIBRATION_TEXT = (
    "The history of the city begins with a small settlement on the river, where traders "
    "exchanged grain, salt and cloth. Over the centuries it grew into a busy port.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Q: What is 17 times 23? A: 17 times 23 is 391. Q: And 391 divided by 17? A: 23.",
    "Photosynthesis converts light energy into chemical energy: plants take in carbon "
    "dioxide and water and release oxygen, storing energy in sugars.",
    "Dear team, the meeting has moved to Thursday at 3 pm in room 204. Please bring the "
    "quarterly figures and your questions. Thanks!",
    "1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181",
)
SEQ_LEN = 48  # tokens per calibration sequence (position 0 carries the massive activations)


@dataclasses.dataclass(frozen=True)
class ModelRanges:
    """A model's measured value ranges (see the module docstring); public to both parties."""

    act_max: float
    norm_var_min: float
    norm_var_max: float
    norm_mean_max: float
    score_spread: float
    logit_spread: float

    def to_array(self) -> np.ndarray:
        return np.asarray(dataclasses.astuple(self), np.float64)

    @classmethod
    def from_array(cls, a) -> "ModelRanges":
        a = np.asarray(a, np.float64).reshape(-1)
        if a.size != len(dataclasses.fields(cls)) or not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("malformed model ranges")
        return cls(*(float(v) for v in a))


class _RangeProbe(PlainOps):
    """The plain backend, recording the statistics the secure protocols' ranges depend on."""

    name = "range-probe"

    def __init__(self) -> None:
        self.act, self.var, self.mean, self.score = [], [], [], []

    def layernorm(self, x, scale, bias, eps):
        self.mean.append(jnp.abs(jnp.mean(x, axis=-1)))
        self.var.append(jnp.var(x, axis=-1))
        return super().layernorm(x, scale, bias, eps)

    def rmsnorm(self, x, scale, eps):
        self.var.append(jnp.mean(jnp.square(x), axis=-1))
        return super().rmsnorm(x, scale, eps)

    def gelu(self, x):
        self.act.append(jnp.abs(x))
        return super().gelu(x)

    def silu(self, x):
        self.act.append(jnp.abs(x))
        return super().silu(x)

    def attention_weights(self, scores, mask):
        hi = jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1)
        lo = jnp.min(jnp.where(mask, scores, jnp.inf), axis=-1)
        self.score.append(hi - lo)
        return super().attention_weights(scores, mask)


def calibration_ids(config: ModelConfig, tokenizer=None) -> np.ndarray:
    """(B, SEQ_LEN) public token ids: `CALIBRATION_TEXT` through the model's tokenizer,
    or (no tokenizer, e.g. a random-weight model) ids from a fixed public seed, each row
    opened by the model's BOS token (0 when it has none)."""
    n = min(SEQ_LEN, config.max_seq_len)
    if tokenizer is None:
        rng = np.random.default_rng(0)
        ids = rng.integers(0, config.vocab_size, size=(len(CALIBRATION_TEXT), n)).astype(np.int32)
        ids[:, 0] = config.bos_token_id or 0
        return ids
    rows = []
    for text in CALIBRATION_TEXT:
        ids = list(tokenizer.encode(text))[:n]
        ids += ids[:1] * (n - len(ids))  # pad short texts by repeating their first token
        rows.append(ids)
    return np.asarray(rows, np.int32) % config.vocab_size


def measure(config: ModelConfig, params, token_ids) -> ModelRanges:
    """The ranges of `params` (the server's private weights) on `token_ids` (B, T)."""
    probe = _RangeProbe()
    logits, _ = arch.forward(config, params, jnp.asarray(token_ids, jnp.int32), ops=probe)
    top = lambda xs: float(max(jnp.max(v) for v in xs)) if xs else 0.0  # noqa: E731
    ranges = ModelRanges(
        act_max=top(probe.act),
        norm_var_min=float(min(jnp.min(v) for v in probe.var)),
        norm_var_max=top(probe.var),
        norm_mean_max=top(probe.mean),
        score_spread=top(probe.score),
        logit_spread=float(jnp.max(jnp.max(logits, -1) - jnp.min(logits, -1))),
    )
    if not np.all(np.isfinite(ranges.to_array())):
        raise UserError("the private model gives non-finite activations on the calibration text")
    return ranges


def _covering_log2(extent: float) -> int:
    """The smallest R with extent < 2^R."""
    return math.floor(math.log2(max(extent, 2.0**-20))) + 1


def _widened(cmp: CoarseCompare, extent: float) -> CoarseCompare:
    """`cmp` with its range widened (never narrowed) so |x − t| ≤ extent stays inside."""
    step = 2.0 ** (cmp.resolution_log2 if cmp.resolution_log2 is not None else -64)
    need = _covering_log2(extent + step)
    if cmp.range_log2 is None or need <= cmp.range_log2:
        return cmp
    return dataclasses.replace(cmp, range_log2=need)


def session_config(ranges: ModelRanges, base: mpc.MPCConfig | None = None) -> mpc.MPCConfig:
    """The session's MPC config: `base`'s approximations with every range covering
    `ranges`·MARGIN (comparison ranges are only ever widened, so the documented round
    counts of the defaults stay a floor).

    * activations: act_compare covers |x| + the largest threshold (2^clip_log2);
    * norms: [norm_var_lo, norm_var_hi] covers the measured variances (the secure norm
      rescales wide rows itself, `mpc.protocols.norm`); LayerNorm's mean must stay < 2^14;
    * attention: softmax_max_compare and exp_compare cover the score spread (+ exp_clip);
    * logits: argmax_compare covers the logit spread (greedy decoding is exact), and
      `logit_spread` bounds the sampling temperature (`mpc.protocols.sampling.min_temperature`).
    """
    from pspec_jax.secure.session import DEFAULT_MPC_CONFIG

    base = base or DEFAULT_MPC_CONFIG
    nl = base.nonlinear
    m = MARGIN
    if ranges.norm_mean_max * m >= 2.0**14:
        raise UserError(f"the private model's LayerNorm inputs have row means up to {ranges.norm_mean_max:.4g}; "
                        f"the secure LayerNorm handles |mean| < {2.0**14 / m:.4g}")
    clip = max(2.0**nl.gelu.clip_log2, 2.0**nl.silu.clip_log2)
    nl = dataclasses.replace(
        nl,
        act_compare=_widened(nl.act_compare, ranges.act_max * m + clip),
        norm_var_lo=min(nl.norm_var_lo, ranges.norm_var_min / m),
        norm_var_hi=max(nl.norm_var_hi, ranges.norm_var_max * m),
        softmax_max_compare=_widened(nl.softmax_max_compare, ranges.score_spread * m),
        exp_compare=_widened(nl.exp_compare, ranges.score_spread * m + nl.exp_clip + 1.0),
        argmax_compare=_widened(nl.argmax_compare, ranges.logit_spread * m),
        logit_spread=ranges.logit_spread * m,
    )
    f = base.frac_bits
    for what, measured, cmp in (("activations", ranges.act_max, nl.act_compare),
                                ("attention score spreads", ranges.score_spread, nl.exp_compare),
                                ("logit spreads", ranges.logit_spread, nl.argmax_compare)):
        try:
            cmp.params(f)
        except ValueError:  # a range this wide is past what any value of the ring can hold
            raise UserError(f"the private model's {what} reach {measured:.4g}: past what the 64-bit ring "
                            f"holds at {f} fractional bits") from None
    return dataclasses.replace(base, nonlinear=nl)


_last: list = []  # [(params, tokenizer, ranges)]: the last model measured (kept alive, so ids stay unique)


def calibrated_config(config: ModelConfig, params, tokenizer=None,
                      base: mpc.MPCConfig | None = None) -> tuple[mpc.MPCConfig, ModelRanges]:
    """`measure` on `calibration_ids`, then `session_config`: what the server does when it
    prepares its model. The last model's ranges are remembered (a measurement is a plain
    forward over a few hundred tokens: seconds for SmolLM2)."""
    if _last and _last[0][0] is params and _last[0][1] is tokenizer:
        ranges = _last[0][2]
    else:
        ranges = measure(config, params, calibration_ids(config, tokenizer))
        _last[:] = [(params, tokenizer, ranges)]
    return session_config(ranges, base), ranges


def describe(ranges: ModelRanges, config: mpc.MPCConfig) -> dict:
    """The calibration and the derived widths, for `--profile` and `--json`."""
    nl = config.nonlinear
    return {"measured": {k: round(v, 4) for k, v in dataclasses.asdict(ranges).items()},
            "margin": MARGIN,
            "act_range_log2": nl.act_compare.range_log2,
            "norm_var": [nl.norm_var_lo, nl.norm_var_hi],
            "softmax_range_log2": nl.softmax_max_compare.range_log2,
            "exp_range_log2": nl.exp_compare.range_log2,
            "argmax_range_log2": nl.argmax_compare.range_log2,
            "logit_spread": nl.logit_spread}

