"""Protocols over shared tensors: `linear` (products, truncation), `compare` (msb, lt,
relu, select) and the nonlinear functions built on them."""
