"""Protocols over shared tensors: `linear` (products, truncation), `compare` (msb, lt,
relu, select), `fss` (one-round comparisons from DCF keys) and the nonlinear functions
built on them."""
