"""Cryptographic pseudo-random streams for the dealer (AES-128 in counter mode).

Each party's correlated randomness is expanded from a 16-byte key the dealer shares with
that party, so the dealer only sends keys and correction tensors (seed compression). Keys
come from `os.urandom`; a fixed seed (tests, reproducible runs) derives them with
SHA-256. JAX's threefry is *not* used: it is not designed as a cryptographic PRG.

`request_words(key, nonce, n)` is random access into a key's randomness: the words of
request number `nonce` are AES-CTR(key) started at the counter block nonce‖0. Every
dealer request of a session has its own nonce (the parties number their requests in
program order, identically), so the dealer can produce any request's material from the
keys and its number alone, without replaying the requests before it; distinct nonces never
share a counter block (a request would need 2^64 blocks to reach the next one).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 16


def derive_keys(count: int, seed: bytes | None = None) -> list[bytes]:
    """`count` independent AES keys: fresh from os.urandom, or derived from `seed`."""
    if seed is None:
        return [os.urandom(KEY_BYTES) for _ in range(count)]
    return [hashlib.sha256(b"pspec-dealer-key|%d|" % i + seed).digest()[:KEY_BYTES] for i in range(count)]


class AesCtrStream:
    """An endless stream of uniformly random uint64 words (AES-128-CTR keystream)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"AES-128 key must be {KEY_BYTES} bytes, got {len(key)}")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
        self.words_drawn = 0

    def words(self, n: int) -> np.ndarray:
        n = int(n)
        self.words_drawn += n
        return np.frombuffer(self._enc.update(bytes(8 * n)), dtype=np.uint64)


def request_words(key: bytes, nonce: int, n: int) -> np.ndarray:
    """The first `n` uint64 words of request `nonce`'s stream under `key` (see the module
    docstring)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"AES-128 key must be {KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= nonce < 2**64:
        raise ValueError(f"request nonce out of range: {nonce}")
    enc = Cipher(algorithms.AES(key), modes.CTR(int(nonce).to_bytes(8, "big") + bytes(8))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * int(n))), dtype=np.uint64)
