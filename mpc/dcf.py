"""Distributed comparison functions (DCF) with a ChaCha20 PRG, and the comparisons they
give for an opened masked value — pure, jit-compiled functions with no channel or dealer.

**PRG.** G: {0,1}^128 -> {0,1}^512 is one ChaCha20 block under the seed as a 128-bit key,
in the 128-bit-key mode of ChaCha's designer (Bernstein, "ChaCha, a variant of Salsa20",
2008, after Salsa20's 16-byte keys: constants "expand 16-byte k", the 16-byte key in both
key slots; the RFC 8439 block function, 256-bit keys, is `chacha20_block`), at block
counter 0 and a fixed 96-bit nonce that names this use ("pspec-DCF-G1"). ChaCha20 is
assumed to be a PRF of its key; a PRF evaluated at one fixed public input under a
uniform secret key is a PRG, and every seed in a DCF tree is uniform or pseudorandom and
keys one block only. 128-bit seeds: λ = 128, as in BCG+21 and SIGMA (AES-128 there).
On uint32 lanes (the 16 state words are 16 arrays over the batch) with the 10 double
rounds in a `fori_loop` (unrolled, XLA takes ~20 s to compile them and runs no faster):
0.2–0.45 µs per block on this 2-core CPU (XLA splits a double round into ~60 fusions;
a hand-written kernel could be several times faster). JAX's threefry is not used.

Output layout of G(s), in words: 0–3 s^L, 4–7 s^R, 8–9 v^L, 10–11 v^R (uint64, low word
first), bit 0 of word 12 t^L, bit 0 of word 13 t^R; words 14–15 are unused.

**DCF** (Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing
for Mixed-Mode and Fixed-Point Secure Computation", Eurocrypt 2021, Fig. 1): for
f^<_{α,β}(x) = β if x < α else 0 on n-bit x (compared as unsigned integers, bits taken
most significant first) with output in Z_{2^ℓ}, keys k_0, k_1 with
Eval(0, k_0, x) + Eval(1, k_1, x) = f^<_{α,β}(x) mod 2^ℓ for every x. Both parties walk
the GGM tree along the bits of x; along α's path their seeds differ and their control
bits t_0 ⊕ t_1 = 1; where x leaves α's path the correction word makes the seeds (and
control bits) equal, so everything below cancels, and the value correction v_cw makes the
running sum there 0, or β when x leaves to the left (x < α).

**Early termination** (as for DPFs, Boyle–Gilboa–Ishai 2016): the tree stops ν levels
early. At depth m = n − ν each party expands its seed once more, G_leaf(s) (one ChaCha
block under another fixed nonce, "pspec-DCF-L1"), into a table of 2^ν entries of ℓ bits
(entry j in a slot of ℓ rounded up to a power of two; ν = `leaf_levels(n, ℓ)`, as many
as 512 bits hold: 9 for ℓ = 1, 3 for ℓ = 64), and reads entry j = x mod 2^ν. Under α's
prefix the two tables differ by t_b·CW_leaf, and CW_leaf[j] brings the sum to
β·1{j < α mod 2^ν} + γ; off it seeds and control bits are equal and everything
cancels. CW_leaf is masked by the other party's table, pseudorandom to this party. It
replaces the last ν levels' n-bit walk (ν PRG blocks per evaluation) by one block and
shrinks the keys (ν·(λ + ℓ + 2) + ℓ bits become 2^ν·ℓ).

Each key is a root seed s^(0)_b of its own and correction words common to both keys:
CW_i = (s_cw: λ bits, v_cw: ℓ bits, t_cw^L, t_cw^R: 1 bit each) for the m tree levels
and CW_leaf: 2^ν entries of ℓ bits.

Key size per element, λ = 128: one key holds λ·(m+1) + ℓ·(m + 2^ν) + 2m bits
(`key_bits`); the correction words alone, λ bits fewer (`correction_bits`) — a party can
draw its root seed from its own dealer stream, so only the correction words travel, the
same ones to both parties (as uint64 words: `pack_corrections`, `correction_words` per
element). `pack_key` writes a key in 16·(m+1) + ⌈(ℓ·(m + 2^ν) + 2m)/8⌉ bytes
(`key_bytes`): e.g. n = 16, ℓ = 1: 195 bytes; n = 64, ℓ = 64: 1,560 bytes.

Security (semi-honest, one party's view): each key alone is computationally
indistinguishable from random (every correction word is masked by a pseudorandom string
from the other party's tree), so it hides α and β; this rests on the PRG security of
ChaCha20 only (BCG+21, Thm. 1; the leaf table as in BGI16's early termination).

Costs per element: keygen 2(m + 1) PRG blocks (m + 1 per party tree); eval m + 1 blocks
plus O(m + 2^ν) word operations. Arrays here are one-dimensional over a batch of N elements (flatten first).

**Comparisons on an opened masked value.** Plain functions over the jitted
DCF (trace them inside a protocol's jit). The dealer draws r uniform in Z_{2^n}, the
parties hold shares of x and of r, open x̂ = x + r mod 2^n (one round; x̂ is uniform, so
it shows nothing), and each evaluates its key locally — no further rounds:
* `lt_from_opened`: 1{x < c} for a public c (unsigned, or two's complement with
  `signed=True`), from a DCF at α = r, β = 1 evaluated at x̂ and at x̂ − c (2 evals).
* `msb_from_opened` / `drelu_from_opened`: the sign of an n-bit two's complement x (SIGMA's
  DReLU), from one (n−1)-bit DCF whose offset carries msb(r) (1 eval of n − 1 levels).
x is the low n bits of a value shared mod 2^64 (both parties reduce their shares of x + r
mod 2^n before opening): exact whenever the value fits n bits, for every r. An interval
1{c ≤ x < d} = lt(d) − lt(c) needs 2 evaluations (w(x̂) cancels); k thresholds on one x
(a spline's pieces) need k + 1.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

U32 = jnp.uint32
U64 = jnp.uint64
LAMBDA_BITS = 128  # seed length λ


def _words_le(text: bytes) -> tuple[int, ...]:
    """Little-endian uint32 words of a byte string (RFC 8439 §2.3)."""
    return tuple(int.from_bytes(text[i:i + 4], "little") for i in range(0, len(text), 4))


CONSTANTS_256 = _words_le(b"expand 32-byte k")  # RFC 8439's constants (256-bit keys)
CONSTANTS_128 = _words_le(b"expand 16-byte k")  # ChaCha's constants for 128-bit keys
PRG_NONCE = _words_le(b"pspec-DCF-G1")  # names the use of ChaCha20 as the DCF's PRG G
LEAF_NONCE = _words_le(b"pspec-DCF-L1")  # names its use as the leaf expansion G_leaf
LEAF_BITS = 512  # one ChaCha block: the leaf table of early termination


# --- ChaCha20 --------------------------------------------------------------------------------
def _rotl(x: jax.Array, k: int) -> jax.Array:
    return (x << U32(k)) | (x >> U32(32 - k))


def _quarter_round(s: list, a: int, b: int, c: int, d: int) -> None:
    s[a] = s[a] + s[b]; s[d] = _rotl(s[d] ^ s[a], 16)  # noqa: E702  (RFC 8439 §2.1 line by line)
    s[c] = s[c] + s[d]; s[b] = _rotl(s[b] ^ s[c], 12)  # noqa: E702
    s[a] = s[a] + s[b]; s[d] = _rotl(s[d] ^ s[a], 8)  # noqa: E702
    s[c] = s[c] + s[d]; s[b] = _rotl(s[b] ^ s[c], 7)  # noqa: E702


def _double_round(state: tuple) -> tuple:
    s = list(state)
    for a, b, c, d in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),  # columns
                       (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):  # diagonals
        _quarter_round(s, a, b, c, d)
    return tuple(s)


def chacha20_lanes(state: tuple) -> tuple:
    """The ChaCha20 block function on 16 uint32 arrays of one shape (one block per lane):
    20 rounds, then the input added word by word (RFC 8439 §2.3). Cost: 20 rounds of 4
    quarter rounds, ~1,000 uint32 operations per block."""
    state = tuple(jnp.asarray(w, U32) for w in state)
    mixed = jax.lax.fori_loop(0, 10, lambda _, s: _double_round(s), state)
    return tuple(m + s for m, s in zip(mixed, state))


def chacha20_block(key: jax.Array, counter: jax.Array, nonce: jax.Array) -> jax.Array:
    """RFC 8439 §2.3 block function: key uint32 (..., 8), counter uint32 (...), nonce
    uint32 (..., 3) (words little-endian, as the RFC reads bytes) -> uint32 (..., 16)
    keystream words."""
    key, nonce = jnp.asarray(key, U32), jnp.asarray(nonce, U32)
    counter = jnp.asarray(counter, U32)
    shape = jnp.broadcast_shapes(key.shape[:-1], counter.shape, nonce.shape[:-1])
    lanes = [jnp.full(shape, c, U32) for c in CONSTANTS_256]
    lanes += [jnp.broadcast_to(key[..., i], shape) for i in range(8)]
    lanes += [jnp.broadcast_to(counter, shape)] + [jnp.broadcast_to(nonce[..., i], shape) for i in range(3)]
    return jnp.stack(chacha20_lanes(tuple(lanes)), axis=-1)


def prg(seed: tuple, nonce: tuple = PRG_NONCE) -> tuple:
    """G(s): 16 pseudorandom uint32 words from a 128-bit seed given as 4 uint32 arrays
    (see the module docstring for the key layout and the output layout). 1 ChaCha block.
    `nonce=LEAF_NONCE`: G_leaf, the leaf expansion (another fixed input of the same PRF:
    independent of G's output)."""
    shape = seed[0].shape
    const = [jnp.full(shape, c, U32) for c in CONSTANTS_128]
    tail = [jnp.zeros(shape, U32)] + [jnp.full(shape, c, U32) for c in nonce]
    return chacha20_lanes((*const, *seed, *seed, *tail))


def _slot(out_bits: int) -> int:
    """Bits per entry of the leaf table: ℓ rounded up to a power of two (an entry never
    straddles a 64-bit word)."""
    return 1 << (out_bits - 1).bit_length()


def leaf_levels(n_bits: int, out_bits: int) -> int:
    """ν, the levels the leaf table replaces (early termination): as many as one
    ChaCha block holds 2^ν entries of the slot size, at most n — 9 for ℓ = 1, 3 for
    ℓ = 64."""
    return min(n_bits, (LEAF_BITS // _slot(out_bits)).bit_length() - 1)


def _leaf_words(seed) -> jax.Array:
    """G_leaf(s) as uint64 (8, N), word i = ChaCha words 2i (low) and 2i + 1."""
    w = prg(tuple(seed), LEAF_NONCE)
    return jnp.stack([_as_u64(w[2 * i], w[2 * i + 1]) for i in range(LEAF_BITS // 64)])


def _leaf_entry(words: jax.Array, j: jax.Array, out_bits: int) -> jax.Array:
    """Entry j (uint64 (N,), traced) of each leaf table: bits [j·slot, j·slot + ℓ) of the
    512-bit string, little-endian over `words` (8, N)."""
    pos = j.astype(U64) * U64(_slot(out_bits))
    word = jnp.take_along_axis(words, (pos >> U64(6)).astype(jnp.int32)[None], axis=0)[0]
    return (word >> (pos & U64(63))) & _low_mask(out_bits)


def leaf_words(n_bits: int, out_bits: int) -> int:
    """uint64 words of a leaf table (and of its correction CW_leaf): 2^ν slots."""
    return -(-(_slot(out_bits) << leaf_levels(n_bits, out_bits)) // 64)


def _leaf_correction(leaf0, leaf1, t1, v_alpha, alpha_low, beta, offset, nu: int, out_bits: int) -> jax.Array:
    """CW_leaf as uint64 (leaf_words, N): entry j = (−1)^t1·(β·1{j < α mod 2^ν} + γ − V_α
    − leaf0[j] + leaf1[j]) mod 2^ℓ, packed in slots as the tables are."""
    words = leaf0.shape[0]
    entries, slot = 1 << nu, _slot(out_bits)
    valid = [_low_mask(min(64, entries * slot - 64 * w)) for w in range(words)]
    if out_bits == 1:  # Z_2: signs vanish and the whole table is one XOR of bit strings
        beta, offset, v_alpha = beta & U64(1), offset & U64(1), v_alpha & U64(1)
        ones = [U64(0) - x for x in (offset ^ v_alpha, beta)]  # all-ones where the bit is set
        out = []
        for w in range(words):  # bits j in [64w, 64w + 64) with j < α_low, times β
            below = jnp.clip(alpha_low.astype(jnp.int64) - 64 * w, 0, 64).astype(U64)
            prefix = jnp.where(below >= U64(64), U64(2**64 - 1), (U64(1) << (below & U64(63))) - U64(1))
            out.append((leaf0[w] ^ leaf1[w] ^ ones[0] ^ (prefix & ones[1])) & valid[w])
        return jnp.stack(out)
    mask = _low_mask(out_bits)
    out = [jnp.zeros_like(leaf0[0]) for _ in range(words)]
    for e in range(entries):
        pos = e * slot
        want = jnp.where(U64(e) < alpha_low, beta, U64(0)) + offset
        entry = _signed(t1, want - v_alpha - _slot_entry(leaf0, pos, out_bits) + _slot_entry(leaf1, pos, out_bits))
        out[pos // 64] = out[pos // 64] | ((entry & mask) << U64(pos % 64))
    return jnp.stack(out)


def _slot_entry(words: jax.Array, pos: int, out_bits: int) -> jax.Array:
    return (words[pos // 64] >> U64(pos % 64)) & _low_mask(out_bits)


# --- DCF: keys, generation, evaluation ------------------------------------------------------
class DcfKey(NamedTuple):
    """One party's DCF keys for a batch of N elements (a pytree). All but `seed` are the
    correction words, equal in both parties' keys."""

    seed: jax.Array  # uint32 (4, N): the root seed s^(0)_b
    cw_seed: jax.Array  # uint32 (m, 4, N): s_cw per tree level (m = n − ν)
    cw_value: jax.Array  # uint64 (m, N): v_cw per tree level, in [0, 2^ℓ)
    cw_bits: jax.Array  # uint8 (m, N): t_cw^L in bit 0, t_cw^R in bit 1
    cw_leaf: jax.Array  # uint64 (`leaf_words(n, ℓ)`, N): CW_leaf, 2^ν entries in slots


def _check_key(key: DcfKey, n_bits: int, out_bits: int) -> None:
    _check_widths(n_bits, out_bits)
    levels = n_bits - leaf_levels(n_bits, out_bits)
    if key.cw_seed.shape[0] != levels or key.cw_leaf.shape[0] != leaf_words(n_bits, out_bits):
        raise ValueError(f"a DCF key of {key.cw_seed.shape[0]} tree levels and {key.cw_leaf.shape[0]} leaf words "
                         f"is not one for n = {n_bits}, ℓ = {out_bits}")


def _low_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def _as_u64(lo: jax.Array, hi: jax.Array) -> jax.Array:
    return lo.astype(U64) | (hi.astype(U64) << U64(32))


def _signed(negate: jax.Array, value: jax.Array) -> jax.Array:
    """(−1)^negate · value mod 2^64."""
    return jnp.where(negate != 0, U64(0) - value, value)


def _where_words(cond: jax.Array, a: tuple, b: tuple) -> tuple:
    return tuple(jnp.where(cond, x, y) for x, y in zip(a, b))


def _expand(words: tuple) -> tuple:
    """G(s) parsed: (s^L, s^R) as 4-tuples of uint32, (v^L, v^R) uint64, (t^L, t^R) uint32
    bits."""
    return (words[0:4], words[4:8], _as_u64(words[8], words[9]), _as_u64(words[10], words[11]),
            words[12] & U32(1), words[13] & U32(1))


def _bits_msb_first(x: jax.Array, n_bits: int) -> jax.Array:
    """uint32 (n, N): bit n−1−i of x in row i (the tree's level i+1 reads row i)."""
    shifts = jnp.arange(n_bits - 1, -1, -1, dtype=U64)
    return ((jnp.asarray(x, U64)[None, :] >> shifts[:, None]) & U64(1)).astype(U32)


def _check_widths(n_bits: int, out_bits: int) -> None:
    if not 1 <= n_bits <= 64:
        raise ValueError(f"DCF input width n must be in [1, 64], got {n_bits}")
    if not 1 <= out_bits <= 64:
        raise ValueError(f"DCF output width ℓ must be in [1, 64], got {out_bits}")


def _seed_words(root_words: jax.Array) -> jax.Array:
    """uint64 (N, 2) -> uint32 (4, N): each word's low half first."""
    w = jnp.asarray(root_words, U64)
    return jnp.stack([w[:, 0], w[:, 0] >> U64(32), w[:, 1], w[:, 1] >> U64(32)]).astype(U32)


def _scan(level, start, xs, *empty_outs):
    """`jax.lax.scan` over the tree levels, also for none (a key that is all leaf table):
    then the carry as it is and empty per-level outputs of the given (shape, dtype)."""
    if jax.tree.leaves(xs)[0].shape[0]:
        return jax.lax.scan(level, start, xs)
    return start, (tuple(jnp.zeros(shape, dtype) for shape, dtype in empty_outs) if empty_outs else None)


def dcf_keygen(root_words: jax.Array, alpha: jax.Array, beta: jax.Array, *, n_bits: int,
               out_bits: int, offset: jax.Array | None = None) -> tuple[DcfKey, DcfKey]:
    """DCF keys for f^<_{α,β} (BCG+21 Fig. 1, with early termination), one pair per
    element; with `offset` γ, for f(x) = β·1{x < α} + γ.

    The offset rides on the value corrections: where x leaves α's path the level's v_cw
    sets the running sum to β + γ (left) or γ (right) instead of β or 0, and the leaf
    table's correction sets it at the leaves under α's prefix. The correction words stay
    masked by the other tree's pseudorandom values, so the keys hide γ as they hide β
    (same proof, any payload).

    Args:
      root_words: uint64 (2, N, 2): party b's root seed per element as two words; draw
        row b from party b's dealer stream and the party can derive its own seed.
      alpha: uint64 (N,) in [0, 2^n). beta: uint64 (N,), taken mod 2^ℓ.
      n_bits: n, input width (1..64). out_bits: ℓ, output group Z_{2^ℓ} (1..64).
      offset: uint64 (N,) or None (0), taken mod 2^ℓ.
    Returns:
      (key of party 0, key of party 1). Cost: 2(n − ν) + 2 ChaCha blocks per element.
    """
    _check_widths(n_bits, out_bits)
    beta = jnp.asarray(beta, U64)
    offset = jnp.zeros_like(beta) if offset is None else jnp.broadcast_to(jnp.asarray(offset, U64), beta.shape)
    return _keygen(root_words, alpha, beta, offset, n_bits=n_bits, out_bits=out_bits)


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def _keygen(root_words, alpha, beta, offset, *, n_bits, out_bits):
    mask = _low_mask(out_bits)
    nu = leaf_levels(n_bits, out_bits)
    beta, offset = jnp.asarray(beta, U64) & mask, jnp.asarray(offset, U64) & mask
    alpha = jnp.asarray(alpha, U64) & _low_mask(n_bits)
    n = beta.shape[0]
    roots = (_seed_words(root_words[0]), _seed_words(root_words[1]))  # 2 × (4, N)

    def level(carry, alpha_bit):  # Fig. 1, steps 6–16 for one level i, α_i = alpha_bit
        seed0, seed1, t0, t1, v_alpha = carry  # v_alpha: V_α, the running sum along α's path
        trees = (_expand(prg(tuple(seed0))), _expand(prg(tuple(seed1))))
        s_l, s_r, v_l, v_r, t_l, t_r = zip(*trees)  # each a pair: (party 0's, party 1's)
        right = alpha_bit != 0  # Keep = the branch α takes (R if α_i = 1), Lose = the other
        s_keep = [_where_words(right, s_r[b], s_l[b]) for b in (0, 1)]
        s_lose = [_where_words(right, s_l[b], s_r[b]) for b in (0, 1)]
        v_keep = [jnp.where(right, v_r[b], v_l[b]) for b in (0, 1)]
        v_lose = [jnp.where(right, v_l[b], v_r[b]) for b in (0, 1)]
        s_cw = tuple(a ^ b for a, b in zip(s_lose[0], s_lose[1]))  # equal seeds below Lose
        # V_cw sets the sum to γ where x leaves α's path; leaving to the left (Lose = L,
        # i.e. α_i = 1) means x < α, so there the sum is β + γ instead.
        payload = jnp.where(right, beta, U64(0)) + offset
        v_cw = _signed(t1, v_lose[1] - v_lose[0] - v_alpha + payload) & mask
        v_alpha = v_alpha - v_keep[1] + v_keep[0] + _signed(t1, v_cw)
        # Control bits: still different under Keep, equal under Lose.
        t_cw_l = t_l[0] ^ t_l[1] ^ alpha_bit ^ U32(1)
        t_cw_r = t_r[0] ^ t_r[1] ^ alpha_bit
        t_cw_keep = jnp.where(right, t_cw_r, t_cw_l)
        t_keep = [jnp.where(right, t_r[b], t_l[b]) for b in (0, 1)]
        # Step 15–16: a party corrects its child iff its control bit is set.
        seeds = [jnp.stack([w ^ (c & (U32(0) - t)) for w, c in zip(s_keep[b], s_cw)])
                 for b, t in ((0, t0), (1, t1))]
        ts = [t_keep[0] ^ (t0 & t_cw_keep), t_keep[1] ^ (t1 & t_cw_keep)]
        out = (jnp.stack(s_cw), v_cw, (t_cw_l | (t_cw_r << U32(1))).astype(jnp.uint8))
        return (seeds[0], seeds[1], ts[0], ts[1], v_alpha), out

    start = (roots[0], roots[1], jnp.zeros(n, U32), jnp.ones(n, U32), jnp.zeros(n, U64))
    (seed0, seed1, _, t1, v_alpha), (cw_seed, cw_value, cw_bits) = _scan(
        level, start, _bits_msb_first(alpha >> U64(nu), n_bits - nu),
        ((n_bits - nu, 4, n), U32), ((n_bits - nu, n), U64), ((n_bits - nu, n), jnp.uint8))
    # Early termination: under α's prefix the two leaf tables differ by t_b·CW_leaf; entry
    # j must bring the sum to β·1{j < α mod 2^ν} + γ (off the prefix the tables, control
    # bits and so the corrections cancel). CW_leaf is masked by the other party's table.
    words = leaf_words(n_bits, out_bits)
    leaf0, leaf1 = (_leaf_words(s)[:words] for s in (seed0, seed1))
    cw_leaf = _leaf_correction(leaf0, leaf1, t1.astype(U64), v_alpha, alpha & _low_mask(nu), beta, offset, nu,
                               out_bits)
    common = dict(cw_seed=cw_seed, cw_value=cw_value, cw_bits=cw_bits, cw_leaf=cw_leaf)
    return DcfKey(seed=roots[0], **common), DcfKey(seed=roots[1], **common)


def dcf_eval(party: jax.Array | int, key: DcfKey, x: jax.Array, *, n_bits: int, out_bits: int) -> jax.Array:
    """Party b's share of f^<_{α,β}(x) mod 2^ℓ (BCG+21 Fig. 1, Eval, with early
    termination).

    Args:
      party: 0 or 1 (may be traced: vmap over a party axis evaluates both keys at once).
      key: that party's `DcfKey` for N elements.
      x: uint64 (N,), read mod 2^n. n_bits, out_bits: n and ℓ (as at key generation).
    Returns:
      uint64 (N,) in [0, 2^ℓ). Cost: n − ν + 1 ChaCha blocks per element.
    """
    _check_key(key, n_bits, out_bits)
    return _eval(party, key, x, n_bits=n_bits, out_bits=out_bits)


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def _eval(party, key, x, *, n_bits, out_bits):
    nu = leaf_levels(n_bits, out_bits)
    levels = n_bits - nu
    party = jnp.asarray(party, U32)
    x = jnp.asarray(x, U64)

    def level(carry, cw):
        seed, t, total = carry
        cw_seed, cw_value, cw_bits, x_bit = cw
        s_l, s_r, v_l, v_r, t_l, t_r = _expand(prg(tuple(seed)))
        t_mask = U32(0) - t  # all ones where this party applies the correction
        right = x_bit != 0
        s_next = jnp.stack([jnp.where(right, r, l) ^ (c & t_mask) for l, r, c in zip(s_l, s_r, cw_seed)])
        t_cw = jnp.where(right, cw_bits >> 1, cw_bits).astype(U32) & U32(1)
        t_next = jnp.where(right, t_r, t_l) ^ (t & t_cw)
        v = jnp.where(right, v_r, v_l) + jnp.where(t != 0, cw_value, U64(0))
        return (s_next, t_next, total + _signed(party, v)), None

    n = x.shape[0]
    start = (key.seed, jnp.broadcast_to(party, (n,)), jnp.zeros(n, U64))
    (seed, t, total), _ = _scan(
        level, start, (key.cw_seed, key.cw_value, key.cw_bits, _bits_msb_first(x >> U64(nu), levels)))
    j = x & _low_mask(nu)
    leaf = _leaf_words(seed)[:key.cw_leaf.shape[0]]
    correction = jnp.where(t != 0, _leaf_entry(key.cw_leaf, j, out_bits), U64(0))
    last = _leaf_entry(leaf, j, out_bits) + correction
    return (total + _signed(party, last)) & _low_mask(out_bits)


# --- key sizes and the wire format -----------------------------------------------------------
def _levels(n_bits: int, out_bits: int) -> tuple[int, int]:
    """(m, ν): a key's tree levels and the levels its leaf table replaces."""
    nu = leaf_levels(n_bits, out_bits)
    return n_bits - nu, nu


def _leaf_bits(n_bits: int, out_bits: int) -> int:
    return _slot(out_bits) << leaf_levels(n_bits, out_bits)


def _field_bits(n_bits: int, out_bits: int) -> int:
    """Bits of the values and control bits: v_cw (ℓ bits) and t^L, t^R per tree level,
    then CW_leaf (2^ν slots)."""
    levels, _ = _levels(n_bits, out_bits)
    return (out_bits + 2) * levels + _leaf_bits(n_bits, out_bits)


def key_bits(n_bits: int, out_bits: int) -> int:
    """Bits of one party's key for one element: root seed + m·(λ + ℓ + 2) + 2^ν·slot, for
    m = n − ν tree levels (`leaf_levels`) and slot = ℓ rounded up to a power of two."""
    return LAMBDA_BITS * (_levels(n_bits, out_bits)[0] + 1) + _field_bits(n_bits, out_bits)


def correction_bits(n_bits: int, out_bits: int) -> int:
    """Bits of the correction words alone (what the dealer sends, to each party)."""
    return key_bits(n_bits, out_bits) - LAMBDA_BITS


def key_bytes(n_bits: int, out_bits: int) -> int:
    """Bytes per element of `pack_key`: seeds as whole bytes, the other fields one bit
    string."""
    return (LAMBDA_BITS // 8) * (_levels(n_bits, out_bits)[0] + 1) + -(-_field_bits(n_bits, out_bits) // 8)


def correction_words(n_bits: int, out_bits: int) -> int:
    """uint64 words per element of `pack_corrections`: 2 per seed correction, then the
    values and control bits in whole words. What the dealer sends (the same words to
    both parties) when each party draws its root seed itself; e.g. n = 15, ℓ = 1 (msb of
    16-bit values): m = 6 tree levels and a 512-entry leaf table, 21 words, 168 bytes
    (`correction_bits`: 162.25 bytes)."""
    return 2 * _levels(n_bits, out_bits)[0] + _field_words(n_bits, out_bits)


def _field_words(n_bits: int, out_bits: int) -> int:
    return -(-_field_bits(n_bits, out_bits) // 64)


def _field_layout(n_bits: int, out_bits: int) -> list[tuple[int, int]]:
    """(bit position, width) of each field in the bit string after the seeds: v_cw per
    tree level (ℓ bits), t^L, t^R per tree level (2 bits: t^L low), then CW_leaf's words
    (its 2^ν slots as one bit string)."""
    levels, _ = _levels(n_bits, out_bits)
    leaf = _leaf_bits(n_bits, out_bits)
    widths = [out_bits] * levels + [2] * levels + [min(64, leaf - 64 * w) for w in range(-(-leaf // 64))]
    return [(sum(widths[:i]), w) for i, w in enumerate(widths)]


def _fields(key: DcfKey) -> list[jax.Array]:
    """uint64 (N,) per field of `_field_layout`."""
    return [*key.cw_value, *key.cw_bits.astype(U64), *key.cw_leaf]


def _pack_fields(fields: list[jax.Array], layout: list[tuple[int, int]], words: int) -> jax.Array:
    """The fields as one little-endian bit string over `words` uint64 words, (N, words):
    bit k of the string is bit k mod 64 of word ⌊k/64⌋; a field that straddles a word
    boundary continues in the next word. Word operations only (no per-bit arrays): the
    cost is O(fields) passes over N, whatever ℓ."""
    out = [jnp.zeros(fields[0].shape, U64) for _ in range(words)]
    for value, (pos, width) in zip(fields, layout):
        index, shift = divmod(pos, 64)
        value = value & _low_mask(width)
        out[index] = out[index] | (value << U64(shift))
        if shift + width > 64:
            out[index + 1] = out[index + 1] | (value >> U64(64 - shift))
    return jnp.stack(out, axis=1)


def _unpack_fields(words: jax.Array, layout: list[tuple[int, int]]) -> list[jax.Array]:
    """The inverse of `_pack_fields`: uint64 (N,) per field from (N, words)."""
    fields = []
    for pos, width in layout:
        index, shift = divmod(pos, 64)
        value = words[:, index] >> U64(shift)
        if shift + width > 64:
            value = value | (words[:, index + 1] << U64(64 - shift))
        fields.append(value & _low_mask(width))
    return fields


def _key_of_fields(seed: jax.Array, cw_seed: jax.Array, fields: list[jax.Array], n_bits: int,
                   out_bits: int) -> DcfKey:
    levels, _ = _levels(n_bits, out_bits)
    n = seed.shape[-1]

    def stack(xs):  # (k, N), also for k = 0
        return jnp.stack(xs) if xs else jnp.zeros((0, n), U64)

    return DcfKey(seed=seed, cw_seed=cw_seed, cw_value=stack(fields[:levels]),
                  cw_bits=stack(fields[levels:2 * levels]).astype(jnp.uint8), cw_leaf=stack(fields[2 * levels:]))


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def pack_key(key: DcfKey, *, n_bits: int, out_bits: int) -> jax.Array:
    """A key as uint8 (N, `key_bytes(n, ℓ)`): the root seed and the m seed corrections
    (16 bytes each, words little-endian), then the values and control bits as one
    little-endian bit string (`_pack_fields`), zero-padded to a byte."""
    _check_key(key, n_bits, out_bits)
    levels = key.cw_seed.shape[0]
    seeds = jnp.concatenate([key.seed[None], key.cw_seed])  # (m+1, 4, N)
    seed_bytes = jax.lax.bitcast_convert_type(jnp.moveaxis(seeds, -1, 0), jnp.uint8)  # (N, m+1, 4, 4)
    n = seed_bytes.shape[0]
    rest = _pack_fields(_fields(key), _field_layout(n_bits, out_bits), _field_words(n_bits, out_bits))
    rest = jax.lax.bitcast_convert_type(rest, jnp.uint8).reshape(n, -1)  # little-endian bytes
    return jnp.concatenate([seed_bytes.reshape(n, -1), rest[:, :key_bytes(n_bits, out_bits) - 16 * (levels + 1)]],
                           axis=1)


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def unpack_key(packed: jax.Array, *, n_bits: int, out_bits: int) -> DcfKey:
    """The inverse of `pack_key`."""
    n = packed.shape[0]
    levels, _ = _levels(n_bits, out_bits)
    seed_len = 16 * (levels + 1)
    seeds = jax.lax.bitcast_convert_type(packed[:, :seed_len].reshape(n, levels + 1, 4, 4), U32)
    seeds = jnp.moveaxis(seeds, 0, -1)  # (m+1, 4, N)
    words = _field_words(n_bits, out_bits)
    rest = jnp.pad(packed[:, seed_len:], ((0, 0), (0, 8 * words - (packed.shape[1] - seed_len))))
    rest = jax.lax.bitcast_convert_type(rest.reshape(n, words, 8), U64)
    return _key_of_fields(seeds[0], seeds[1:], _unpack_fields(rest, _field_layout(n_bits, out_bits)), n_bits,
                          out_bits)


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def pack_corrections(key: DcfKey, *, n_bits: int, out_bits: int) -> jax.Array:
    """A key's correction words (no root seed) as uint64 (N, `correction_words(n, ℓ)`):
    the m seed corrections (2 words each, low 32-bit half first), then the values and
    control bits as `_pack_fields`' bit string, zero-padded."""
    _check_key(key, n_bits, out_bits)
    levels, _, n = key.cw_seed.shape
    seeds = key.cw_seed.astype(U64)  # (m, 4, N)
    seed_words = jnp.stack([seeds[:, 0] | (seeds[:, 1] << U64(32)), seeds[:, 2] | (seeds[:, 3] << U64(32))],
                           axis=1).reshape(2 * levels, n).T  # (N, 2m)
    rest = _pack_fields(_fields(key), _field_layout(n_bits, out_bits), _field_words(n_bits, out_bits))
    return jnp.concatenate([seed_words, rest], axis=1)


@functools.partial(jax.jit, static_argnames=("n_bits", "out_bits"))
def unpack_corrections(words: jax.Array, seed: jax.Array, *, n_bits: int, out_bits: int) -> DcfKey:
    """The key of `pack_corrections`' words (N, W) and a party's own root seed (uint32
    (4, N), `seed_words` of its dealer words)."""
    words = jnp.asarray(words, U64)
    n = words.shape[0]
    levels, _ = _levels(n_bits, out_bits)
    seeds = words[:, :2 * levels].T.reshape(levels, 2, n)
    cw_seed = jnp.stack([seeds[:, 0], seeds[:, 0] >> U64(32), seeds[:, 1], seeds[:, 1] >> U64(32)],
                        axis=1).astype(U32)  # (m, 4, N)
    fields = _unpack_fields(words[:, 2 * levels:], _field_layout(n_bits, out_bits))
    return _key_of_fields(jnp.asarray(seed, U32), cw_seed, fields, n_bits, out_bits)


def seed_words(root_words: jax.Array) -> jax.Array:
    """A root seed drawn as uint64 (N, 2) words, as the uint32 (4, N) a `DcfKey` holds."""
    return _seed_words(root_words)


# --- comparisons of a masked, opened value ----------------------------------------------------
def lt_keygen(root_words: jax.Array, r: jax.Array, *, n_bits: int, out_bits: int) -> tuple[DcfKey, DcfKey]:
    """Keys for `lt_from_opened` under the mask r (uint64 (N,), in [0, 2^n)): a DCF at
    α = r, β = 1. Cost: 2(n − ν + 1) ChaCha blocks per element; `key_bytes(n, ℓ)` per key."""
    r = jnp.asarray(r, U64)
    return dcf_keygen(root_words, r, jnp.ones_like(r), n_bits=n_bits, out_bits=out_bits)


def lt_from_opened(party: jax.Array | int, key: DcfKey, x_hat: jax.Array, threshold: jax.Array, *,
                   n_bits: int, out_bits: int, signed: bool = False) -> jax.Array:
    """Party b's share (mod 2^ℓ) of 1{x < c} for x̂ = x + r mod 2^n and a public c (n: the
    key's levels).

    With w(z) = 1{z < r} — the DCF — every wrap is accounted for: as integers
    x + r = x̂ + 2^n·w(x̂) and (x − c mod 2^n) + r = (x̂ − c mod 2^n) + 2^n·w(x̂ − c), hence

        1{x < c} = w(x̂ − c mod 2^n) − w(x̂) + 1{x̂ < c}      (the last term public).

    `signed`: x and c are n-bit two's complement; adding 2^(n−1) to both maps signed order
    onto unsigned order, and to x̂ it is a public shift. One key serves any threshold (and
    any number of them: w(x̂) is common). Cost: 2 evaluations, 2(n − ν + 1) ChaCha blocks per
    element.
    """
    mask = _low_mask(n_bits)
    x_hat = jnp.asarray(x_hat, U64) & mask
    threshold = jnp.broadcast_to(jnp.asarray(threshold, U64) & mask, x_hat.shape)
    if signed:
        half = U64(1 << (n_bits - 1))
        x_hat, threshold = (x_hat + half) & mask, (threshold + half) & mask
    w_shifted = dcf_eval(party, key, (x_hat - threshold) & mask, n_bits=n_bits, out_bits=out_bits)
    w_plain = dcf_eval(party, key, x_hat, n_bits=n_bits, out_bits=out_bits)
    public = jnp.where(jnp.asarray(party) == 0, (x_hat < threshold).astype(U64), U64(0))
    return (w_shifted - w_plain + public) & _low_mask(out_bits)


def msb_keygen(root_words: jax.Array, r: jax.Array, *, n_bits: int, out_bits: int) -> tuple[DcfKey, DcfKey]:
    """Keys for `msb_from_opened` under the mask r (uint64 (N,), in [0, 2^n)), n ≥ 2: an
    (n−1)-bit DCF at α = r mod 2^(n−1), β = 1 − 2a, offset γ = a for a = msb(r), so that
    it evaluates to a ⊕ 1{z < α} = a + (1 − 2a)·1{z < α} mod 2^ℓ. Folding a into the
    DCF leaves no party-specific part: the correction words are the same for both
    parties. Cost: 2(n − ν) ChaCha blocks per element (ν = `leaf_levels(n − 1, ℓ)`);
    `key_bytes(n − 1, ℓ)` per key."""
    if not 2 <= n_bits <= 64:
        raise ValueError(f"msb_keygen: n must be in [2, 64], got {n_bits}")
    mask = _low_mask(out_bits)
    r = jnp.asarray(r, U64) & _low_mask(n_bits)
    r_msb = r >> U64(n_bits - 1)
    low = r & _low_mask(n_bits - 1)
    payload = (U64(1) - (r_msb << U64(1))) & mask  # 1, or −1 when msb(r) = 1
    return dcf_keygen(root_words, low, payload, n_bits=n_bits - 1, out_bits=out_bits, offset=r_msb)


def msb_from_opened(party: jax.Array | int, key: DcfKey, x_hat: jax.Array, *, n_bits: int,
                    out_bits: int) -> jax.Array:
    """Party b's share (mod 2^ℓ) of msb(x) — x < 0 for n-bit two's complement x — from
    x̂ = x + r mod 2^n (SIGMA's DReLU; BCG+21 §4; n: the key's DCF levels + 1).

    Adding r to x bit by bit, msb(x) = msb(x̂) ⊕ msb(r) ⊕ carry, and the carry out of the
    low n − 1 bits is c = 1{x̂ mod 2^(n−1) < r mod 2^(n−1)}: the DCF of `msb_keygen`,
    which gives shares of a ⊕ c for a = msb(r); then msb(x) = m + (1 − 2m)·(a ⊕ c) for
    the public m = msb(x̂). With ℓ = 1 the shares are XOR shares of the bit. Exact for
    every x and r. Cost: 1 evaluation, n − ν ChaCha blocks per element (ν = `leaf_levels(n − 1, ℓ)`).
    """
    x_hat = jnp.asarray(x_hat, U64) & _low_mask(n_bits)
    m = x_hat >> U64(n_bits - 1)
    a_xor_c = dcf_eval(party, key, x_hat & _low_mask(n_bits - 1), n_bits=n_bits - 1, out_bits=out_bits)
    public = jnp.where(jnp.asarray(party) == 0, m, U64(0))
    return (_signed(m, a_xor_c) + public) & _low_mask(out_bits)


def drelu_from_opened(party: jax.Array | int, key: DcfKey, x_hat: jax.Array, *, n_bits: int,
                      out_bits: int) -> jax.Array:
    """Party b's share of DReLU(x) = 1{x ≥ 0} = 1 − msb(x) (n-bit two's complement).
    Cost: as `msb_from_opened`."""
    one = jnp.where(jnp.asarray(party) == 0, U64(1), U64(0))
    return (one - msb_from_opened(party, key, x_hat, n_bits=n_bits, out_bits=out_bits)) & _low_mask(out_bits)
