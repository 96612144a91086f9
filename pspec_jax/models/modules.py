"""Flax nnx modules: thin owners of the parameters that call the pure forward in arch.py.

`Transformer(config, params=None, rngs=...)` holds the params pytree as `nnx.Param`
leaves (nested `nnx.Dict` / `nnx.List`, same names as arch.py) so optimisers and nnx
transforms see them; `__call__` reads them back into a plain pytree and runs
`arch.forward` with the plain backend. `GPT2` and `Llama` fix the family.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from pspec_jax.models import arch
from pspec_jax.models.cache import KVCache, init_cache
from pspec_jax.models.config import ModelConfig
from pspec_jax.models.ops import PLAIN


def _wrap(t: Any) -> Any:
    if isinstance(t, dict):
        return nnx.Dict({k: _wrap(v) for k, v in t.items()})
    if isinstance(t, (list, tuple)):
        return nnx.List([_wrap(v) for v in t])
    return nnx.Param(t)


def _unwrap(t: Any) -> Any:
    if isinstance(t, (nnx.Dict, dict)):
        return {k: _unwrap(t[k]) for k in t}
    if isinstance(t, (nnx.List, list)):
        return [_unwrap(v) for v in t]
    return t[...]


class Transformer(nnx.Module):
    """A GPT-2 or LLaMA decoder (family from the config) owning its params."""

    family: str | None = None

    def __init__(self, config: ModelConfig, params: arch.Params | None = None, *,
                 rngs: nnx.Rngs | None = None):
        if self.family is not None and config.family != self.family:
            raise ValueError(f"{type(self).__name__} needs family {self.family!r}, "
                             f"got {config.family!r}")
        if params is None:
            rngs = rngs if rngs is not None else nnx.Rngs(0)
            params = arch.init_params(config, rngs.params())
        self.config = config
        self.params = _wrap(params)

    def params_tree(self) -> arch.Params:
        """The parameters as a plain pytree of arrays (arch.py layout)."""
        return _unwrap(self.params)

    def init_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        return init_cache(self.config, batch, max_len)

    def __call__(self, token_ids: jax.Array, cache: KVCache | None = None,
                 ops: Any = PLAIN) -> tuple[jax.Array, KVCache]:
        """(B, T) token ids appended to `cache` -> (logits (B, T, V), new cache)."""
        return arch.forward(self.config, self.params_tree(), token_ids, cache, ops)


class GPT2(Transformer):
    family = "gpt2"


class Llama(Transformer):
    family = "llama"
