"""The private model evaluated under 2PC: the secure backend of the architectures
(`SecureOps`), the server's weight set-up (`prepare_params`) and a session with the
shared KV cache (`SecureSession`)."""

from pspec_jax.secure.ops import SecureOps, prepare_params
from pspec_jax.secure.session import SecureSession

__all__ = ["SecureOps", "SecureSession", "prepare_params"]
