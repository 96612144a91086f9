"""pspec: private speculative decoding in JAX.

The MPC layer computes in the ring Z_2^64 on uint64 arrays, which JAX only provides with
64-bit types enabled; every model therefore states its float dtype explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
