"""mpc: a two-party (client/server) secure-computation engine over Z_2^64 in JAX.

Layers, bottom up (none reaches sideways):
  ring      uint64 arithmetic, exact ring matmul on fast float64/int32 dots
  fixed     fixed-point encode/decode
  shares    Shared (arithmetic) and XorShared (boolean) tensors; local operations
  prg       AES-CTR streams (the dealer's cryptographic randomness)
  dcf       distributed comparison functions (BCG+21) on a ChaCha20 PRG: key generation,
            evaluation, key packing, comparisons of an opened x + r (pure functions)
  ledger    bytes/rounds per op; network model
  channel   every message between parties goes through it and is counted there
  dealer    correlated randomness (triples, masks, truncation pairs, AND triples, DCF keys)
  context   the session (config, channel, dealer) and `secure_jit`
  protocols linear (mul, matmul, server-weight products, truncation), compare (msb, lt,
            relu, select; Kogge–Stone, or one-round DCF in fss), and the nonlinear
            functions built on them
  transport real links between processes (framed numpy messages over mutual TLS 1.3,
            network emulation); knows nothing of the layers above, imported on demand
"""

import jax

jax.config.update("jax_enable_x64", True)

from mpc.context import Context, MPCConfig, party_context, restart_party_context, secure_jit  # noqa: E402
from mpc.fixed import FixedPoint  # noqa: E402
from mpc.ledger import NETWORKS, Ledger, NetworkModel, network  # noqa: E402
from mpc.ring import ring_matmul  # noqa: E402
from mpc.shares import CLIENT, SERVER, Shared, XorShared  # noqa: E402

__all__ = ["CLIENT", "SERVER", "Context", "FixedPoint", "Ledger", "MPCConfig", "NETWORKS",
           "NetworkModel", "Shared", "XorShared", "network", "party_context", "restart_party_context", "ring_matmul",
           "secure_jit"]
