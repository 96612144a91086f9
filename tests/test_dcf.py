"""DCF (mpc/dcf.py): ChaCha20 against RFC 8439, DCF correctness on random and boundary
inputs, keys that look uniform whatever α (with a leaky keygen as negative control), the
offset comparisons (lt, msb, DReLU) across every wrap, and exact key sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

import mpc  # noqa: F401  (enables 64-bit JAX types)
from mpc import dcf
from mpc.prg import derive_keys, request_words

RFC_KEY = bytes(range(32))
# RFC 8439 §2.3.2: the serialized block for the key above, this nonce, counter 1.
RFC_BLOCK_NONCE = bytes.fromhex("000000090000004a00000000")
RFC_BLOCK = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")
# RFC 8439 §2.4.2: the sunscreen plaintext encrypted from counter 1.
RFC_ENC_NONCE = bytes.fromhex("000000000000004a00000000")
RFC_PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
                 b"the future, sunscreen would be it.")
RFC_CIPHERTEXT = bytes.fromhex(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d")


def _words(b: bytes) -> np.ndarray:
    return np.frombuffer(b, "<u4")


def _block_bytes(key: bytes, counter, nonce: bytes) -> bytes:
    return np.asarray(dcf.chacha20_block(_words(key), np.asarray(counter, np.uint32), _words(nonce))) \
        .astype("<u4").tobytes()


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def _root_words(n: int, request: int = 0, seed: bytes = b"test-dcf") -> np.ndarray:
    """Both parties' root seeds as each would draw them from its own dealer stream."""
    keys = derive_keys(2, seed)
    return np.stack([request_words(k, request, 2 * n).reshape(n, 2) for k in keys])


def _uniform(rng, bits: int, n: int) -> np.ndarray:
    return rng.integers(0, 2**64, n, dtype=np.uint64) & _mask(bits)


def _reconstruct(fn, keys, *args, out_bits: int, on=np, **kw):
    """Both parties' outputs summed mod 2^ℓ (the plaintext simulation); `on=jnp` to trace."""
    shares = [on.asarray(fn(p, keys[p], *args, out_bits=out_bits, **kw)) for p in (0, 1)]
    return (shares[0] + shares[1]) & _mask(out_bits)


def _signed(v: np.ndarray, bits: int) -> list[int]:
    return [int(a) - (1 << bits) if int(a) >> (bits - 1) else int(a) for a in v]


# --- ChaCha20 --------------------------------------------------------------------------------
def test_chacha20_rfc8439_block_vector():
    assert _block_bytes(RFC_KEY, 1, RFC_BLOCK_NONCE) == RFC_BLOCK


def test_chacha20_rfc8439_encryption_vector():
    keystream = _block_bytes(RFC_KEY, [1, 2], RFC_ENC_NONCE)  # two blocks, batched
    ciphertext = bytes(p ^ k for p, k in zip(RFC_PLAINTEXT, keystream))
    assert ciphertext == RFC_CIPHERTEXT


def test_chacha20_matches_cryptography_on_random_batches():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**32, (16, 8), dtype=np.uint32)
    counters = rng.integers(0, 2**32, 16, dtype=np.uint32)
    counters[0] = 2**32 - 1
    nonces = rng.integers(0, 2**32, (16, 3), dtype=np.uint32)
    ours = np.asarray(dcf.chacha20_block(keys, counters, nonces)).astype("<u4")
    for i in range(16):
        nonce16 = int(counters[i]).to_bytes(4, "little") + nonces[i].astype("<u4").tobytes()
        enc = Cipher(algorithms.ChaCha20(keys[i].astype("<u4").tobytes(), nonce16), None).encryptor()
        assert ours[i].tobytes() == enc.update(bytes(64)), i


def test_prg_uses_the_128_bit_key_layout():
    """G(s) is the ChaCha20 block of the state (“expand 16-byte k”, s, s, 0, nonce)."""
    seed = np.array([[1], [2], [3], [0xFFFFFFFF]], np.uint32)
    state = [*dcf.CONSTANTS_128, *seed[:, 0], *seed[:, 0], 0, *dcf.PRG_NONCE]
    expect = dcf.chacha20_lanes(tuple(np.array([w], np.uint32) for w in state))
    got = dcf.prg(tuple(jnp.asarray(seed)))
    assert [int(g[0]) for g in got] == [int(e[0]) for e in expect]
    assert dcf.CONSTANTS_128 != dcf.CONSTANTS_256


# --- DCF correctness -----------------------------------------------------------------------
# The output width ℓ is an operand of the compiled programs, the input width n and the batch
# N are shapes: the tests keep to a few n and to N = 256 so that compilations are shared.
N = 256
WIDTHS = [(8, 1), (8, 16), (16, 64), (32, 16), (64, 64), (64, 1), (1, 8)]


@pytest.mark.parametrize("n_bits,out_bits", WIDTHS)
def test_dcf_random_and_boundary_inputs(n_bits, out_bits):
    rng = np.random.default_rng(n_bits * 100 + out_bits)
    top = _mask(n_bits)
    alpha = _uniform(rng, n_bits, N)
    alpha[:4] = [0, top, 1, top - np.uint64(1) if n_bits > 1 else 0]
    beta = _uniform(rng, out_bits, N)
    beta[4] = 0
    keys = dcf.dcf_keygen(_root_words(N), alpha, beta, n_bits=n_bits, out_bits=out_bits)
    one = np.uint64(1)
    for x in [alpha, (alpha - one) & top, (alpha + one) & top, np.zeros_like(alpha), np.full_like(alpha, top),
              _uniform(rng, n_bits, N)]:
        np.testing.assert_array_equal(_reconstruct(dcf.dcf_eval, keys, x, n_bits=n_bits, out_bits=out_bits),
                                      np.where(x < alpha, beta, 0))


@pytest.mark.parametrize("n_bits,out_bits", [(8, 1), (16, 64)])
def test_dcf_offset(n_bits, out_bits):
    """f(x) = β·1{x < α} + γ at α, α ± 1, the ends and random x."""
    rng = np.random.default_rng(7 * n_bits + out_bits)
    top = _mask(n_bits)
    alpha, beta, gamma = _uniform(rng, n_bits, N), _uniform(rng, out_bits, N), _uniform(rng, out_bits, N)
    alpha[:2] = [0, top]
    keys = dcf.dcf_keygen(_root_words(N, request=5), alpha, beta, n_bits=n_bits, out_bits=out_bits, offset=gamma)
    one = np.uint64(1)
    for x in [alpha, (alpha - one) & top, (alpha + one) & top, np.zeros_like(alpha), np.full_like(alpha, top),
              _uniform(rng, n_bits, N)]:
        np.testing.assert_array_equal(_reconstruct(dcf.dcf_eval, keys, x, n_bits=n_bits, out_bits=out_bits),
                                      (np.where(x < alpha, beta, 0) + gamma) & _mask(out_bits))


def test_dcf_party_may_be_traced():
    """Both keys evaluated in one program, the party axis vmapped (the simulation's way)."""
    rng = np.random.default_rng(9)
    alpha, beta, x = _uniform(rng, 8, N), _uniform(rng, 16, N), _uniform(rng, 8, N)
    keys = dcf.dcf_keygen(_root_words(N, request=3), alpha, beta, n_bits=8, out_bits=16)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), *keys)
    shares = jax.jit(jax.vmap(lambda p, k: dcf.dcf_eval(p, k, x, n_bits=8, out_bits=16)))(jnp.arange(2), stacked)
    np.testing.assert_array_equal(np.asarray(shares[0] + shares[1]) & _mask(16), np.where(x < alpha, beta, 0))


def test_dcf_exhaustive_over_8_bits():
    """Every α and every x of 8 bits: 65,536 evaluations per party."""
    alpha = np.arange(N, dtype=np.uint64)
    beta = (alpha * np.uint64(2654435761) + np.uint64(7)) & _mask(16)
    keys = dcf.dcf_keygen(_root_words(N, request=1), alpha, beta, n_bits=8, out_bits=16)
    for x in range(256):
        points = np.full(N, x, np.uint64)
        np.testing.assert_array_equal(_reconstruct(dcf.dcf_eval, keys, points, n_bits=8, out_bits=16),
                                      np.where(x < alpha, beta, 0), err_msg=f"x = {x}")


def test_dcf_one_key_alone_reconstructs_nothing():
    """A party's share alone is not f(x): with β = 1 the shares are far from 0/1."""
    alpha = np.full(N, 100, np.uint64)
    keys = dcf.dcf_keygen(_root_words(N, request=2), alpha, np.ones(N, np.uint64), n_bits=8, out_bits=64)
    share = np.asarray(dcf.dcf_eval(0, keys[0], np.full(N, 5, np.uint64), n_bits=8, out_bits=64))
    assert np.mean(share <= 1) < 0.01


def test_dcf_rejects_bad_widths():
    with pytest.raises(ValueError, match="input width"):
        dcf.dcf_keygen(_root_words(4), np.zeros(4, np.uint64), np.zeros(4, np.uint64), n_bits=65, out_bits=8)
    with pytest.raises(ValueError, match="output width"):
        dcf.dcf_keygen(_root_words(4), np.zeros(4, np.uint64), np.zeros(4, np.uint64), n_bits=8, out_bits=0)


# --- keys hide α ---------------------------------------------------------------------------
def _leaky_keygen(root_words, alpha, beta, *, n_bits, out_bits):
    """A broken keygen: the control-bit corrections t_cw^L = α_i ⊕ 1, t_cw^R = α_i without
    the pseudorandom t's that should mask them — each key then carries α in clear."""
    k0, k1 = dcf.dcf_keygen(root_words, alpha, beta, n_bits=n_bits, out_bits=out_bits)
    m = k0.cw_seed.shape[0]  # tree levels (the leaf table holds the last ν bits of α)
    bits = np.asarray(dcf._bits_msb_first(np.asarray(alpha) >> np.uint64(n_bits - m), m)).astype(np.uint8)
    leaked = (bits ^ 1) | (bits << 1)
    return k0._replace(cw_bits=leaked), k1._replace(cw_bits=leaked)


def _leaky_leaf_keygen(root_words, alpha, beta, *, n_bits, out_bits):
    """A broken keygen: the leaf table's correction without the leaf tables that should
    mask it — the truth table of 1{j < α mod 2^ν}·β in clear."""
    k0, k1 = dcf.dcf_keygen(root_words, alpha, beta, n_bits=n_bits, out_bits=out_bits)
    nu, slot = dcf.leaf_levels(n_bits, out_bits), 1 << (out_bits - 1).bit_length()
    clear = np.zeros(k0.cw_leaf.shape, np.uint64)
    for j in range(2**nu):  # slot j of the table: β where j < α mod 2^ν
        entry = np.where(j < (np.asarray(alpha) & np.uint64(2**nu - 1)), np.asarray(beta), np.uint64(0))
        clear[j * slot // 64] |= entry << np.uint64(j * slot % 64)
    return k0._replace(cw_leaf=jnp.asarray(clear)), k1._replace(cw_leaf=jnp.asarray(clear))


def _min_column_pvalue(packed: np.ndarray) -> float:
    """The smallest χ² p-value, over the byte positions of packed keys, of the test that the
    position's byte is uniform over 0..255."""
    counts = np.stack([np.bincount(col, minlength=256) for col in packed.T])
    return float(stats.chisquare(counts, axis=1).pvalue.min())


# n = 17, ℓ = 16: 12 tree levels and a 32-entry leaf table; the bit string is
# 16·(12 + 32) + 24 = 728 bits, a whole number of bytes, so no zero padding skews the last
# byte.
@pytest.mark.parametrize("keygen,uniform", [(dcf.dcf_keygen, True), (_leaky_keygen, False),
                                            (_leaky_leaf_keygen, False)])
def test_keys_look_uniform_whatever_alpha(keygen, uniform):
    n_bits, out_bits, count = 17, 16, 4096
    rng = np.random.default_rng(5)
    beta = _uniform(rng, out_bits, count)
    pvalues = []
    for request, alpha in enumerate([np.zeros(count, np.uint64), np.full(count, 2**16 - 1, np.uint64),
                                     np.full(count, 0x5A5A, np.uint64)]):
        keys = keygen(_root_words(count, request=10 + request), alpha, beta, n_bits=n_bits, out_bits=out_bits)
        for key in keys:
            packed = np.asarray(dcf.pack_key(key, n_bits=n_bits, out_bits=out_bits))
            assert packed.shape == (count, dcf.key_bytes(n_bits, out_bits))
            pvalues.append(_min_column_pvalue(packed))
    # 6 × 299 byte positions: Bonferroni at family-wise 1e-4 for the honest keys.
    threshold = 1e-4 / (6 * dcf.key_bytes(n_bits, out_bits))
    if uniform:
        assert min(pvalues) > threshold, pvalues
    else:
        assert max(pvalues) < threshold, pvalues


# --- comparisons of x̂ = x + r --------------------------------------------------------------
def _masks_and_inputs(rng, n_bits: int, count: int):
    """r and x with every boundary: r = 0, 1, 2^(n−1), 2^n − 1; x = 0, ±1, the signed
    extremes; pairs where x + r wraps mod 2^n by exactly 0, 1 and the most."""
    top, half = _mask(n_bits), np.uint64(1 << (n_bits - 1))
    one = np.uint64(1)
    r, x = _uniform(rng, n_bits, count), _uniform(rng, n_bits, count)
    special_x = [0, 1, top, half, half - one, half + one, top - one]
    special_r = [0, 1, half, top, half - one]
    at = 0
    for rv in special_r:
        for xv in special_x:
            r[at], x[at] = rv, xv
            at += 1
    for rv in (one, half, top, _uniform(rng, n_bits, 1)[0] | one):
        # x + r = 2^n − 1 (the largest sum without a wrap), = 2^n (x̂ = 0), = 2^n + r − 1.
        for xv in ((-int(rv) - 1) & int(top), -int(rv) & int(top), int(top)):
            r[at], x[at] = rv, xv
            at += 1
    r, x = r & top, x & top  # at n ≤ 2 some of the values above coincide or overflow
    return r, x, (x + r) & top


@pytest.mark.parametrize("n_bits,out_bits", [(8, 1), (8, 64), (16, 16), (32, 1), (64, 64), (1, 8)])
def test_lt_from_opened_unsigned_and_signed(n_bits, out_bits):
    rng = np.random.default_rng(n_bits + 7 * out_bits)
    r, x, x_hat = _masks_and_inputs(rng, n_bits, N)
    threshold = _uniform(rng, n_bits, N)
    threshold[::5] = 0
    threshold[1::5] = _mask(n_bits)
    threshold[2::5] = np.uint64(1 << (n_bits - 1))
    threshold[3::5] = x[3::5]  # x = c
    keys = dcf.lt_keygen(_root_words(N, request=20), r, n_bits=n_bits, out_bits=out_bits)
    unsigned = _reconstruct(dcf.lt_from_opened, keys, x_hat, threshold, n_bits=n_bits, out_bits=out_bits)
    np.testing.assert_array_equal(unsigned, (x < threshold).astype(np.uint64))
    signed = _reconstruct(dcf.lt_from_opened, keys, x_hat, threshold, n_bits=n_bits, out_bits=out_bits,
                          signed=True)
    expect = np.array(_signed(x, n_bits), object) < np.array(_signed(threshold, n_bits), object)
    np.testing.assert_array_equal(signed, expect.astype(np.uint64))


# msb at n uses an (n−1)-bit DCF: n = 9, 17, 33 share the compilations of n = 8, 16, 32.
@pytest.mark.parametrize("n_bits,out_bits", [(9, 1), (17, 16), (33, 64), (64, 64), (64, 1), (2, 8)])
def test_msb_and_drelu_from_opened(n_bits, out_bits):
    rng = np.random.default_rng(3 * n_bits + out_bits)
    r, x, x_hat = _masks_and_inputs(rng, n_bits, N)
    keys = dcf.msb_keygen(_root_words(N, request=30), r, n_bits=n_bits, out_bits=out_bits)
    for a, b in zip(keys[0][1:], keys[1][1:]):  # msb(r) folded in: the correction words are common
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    negative = (np.array(_signed(x, n_bits)) < 0).astype(np.uint64)
    msb = _reconstruct(dcf.msb_from_opened, keys, x_hat, n_bits=n_bits, out_bits=out_bits)
    np.testing.assert_array_equal(msb, negative)
    drelu = _reconstruct(dcf.drelu_from_opened, keys, x_hat, n_bits=n_bits, out_bits=out_bits)
    np.testing.assert_array_equal(drelu, 1 - negative)


def test_comparisons_exhaustive_over_9_and_8_bits():
    """msb over every x of 9 bits under 256 masks (r = 0..255 and their top-bit twins);
    lt over every (x, r) of 8 bits for thresholds at and around the boundaries."""
    r = np.arange(N, dtype=np.uint64) | (np.arange(N, dtype=np.uint64) & np.uint64(1)) << np.uint64(8)
    keys = dcf.msb_keygen(_root_words(N, request=40), r, n_bits=9, out_bits=8)
    msb = jax.jit(lambda x_hat: _reconstruct(dcf.msb_from_opened, keys, x_hat, n_bits=9, out_bits=8, on=jnp))
    for x in range(512):
        got = np.asarray(msb((np.uint64(x) + r) & _mask(9)))
        np.testing.assert_array_equal(got, np.full(N, x >= 256, np.uint64), err_msg=f"x = {x}")

    r = np.arange(N, dtype=np.uint64)
    keys = dcf.lt_keygen(_root_words(N, request=41), r, n_bits=8, out_bits=8)
    lt = jax.jit(lambda x_hat, c: _reconstruct(dcf.lt_from_opened, keys, x_hat, c, n_bits=8, out_bits=8, on=jnp))
    for c in (0, 1, 128, 255):
        for x in range(256):
            got = np.asarray(lt((np.uint64(x) + r) & _mask(8), np.uint64(c)))
            np.testing.assert_array_equal(got, np.full(N, x < c, np.uint64), err_msg=f"x = {x}, c = {c}")


# --- key sizes and the wire format -----------------------------------------------------------
@pytest.mark.parametrize("n_bits,out_bits", [(1, 1), (8, 7), (16, 16), (64, 64)])
def test_key_size_and_pack_round_trip(n_bits, out_bits):
    rng = np.random.default_rng(n_bits)
    alpha, beta = _uniform(rng, n_bits, N), _uniform(rng, out_bits, N)
    keys = dcf.dcf_keygen(_root_words(N, request=50), alpha, beta, n_bits=n_bits, out_bits=out_bits)
    nu = dcf.leaf_levels(n_bits, out_bits)
    m = n_bits - nu  # tree levels; the leaf table (2^ν slots) replaces ν more
    slot = 1 << (out_bits - 1).bit_length()  # ℓ rounded up to a power of two
    assert 2**nu * slot <= 512 and (nu == n_bits or 2**(nu + 1) * slot > 512)  # as many as one block holds
    bits = 128 * (m + 1) + (out_bits + 2) * m + 2**nu * slot  # the documented count
    assert dcf.key_bits(n_bits, out_bits) == bits
    assert dcf.correction_bits(n_bits, out_bits) == bits - 128
    assert dcf.key_bytes(n_bits, out_bits) == -(-bits // 8)
    # The in-memory fields hold exactly those bits: seeds, values below 2^ℓ, 2 control bits.
    k0 = keys[0]
    assert k0.seed.shape == (4, N) and k0.cw_seed.shape == (m, 4, N) and k0.cw_value.shape == (m, N)
    assert k0.cw_leaf.shape == (dcf.leaf_words(n_bits, out_bits), N)
    assert np.all(np.asarray(k0.cw_value) <= _mask(out_bits))
    assert np.all(np.asarray(k0.cw_bits) <= 3)
    x = _uniform(rng, n_bits, N)
    for p, key in enumerate(keys):
        packed = dcf.pack_key(key, n_bits=n_bits, out_bits=out_bits)
        assert packed.shape == (N, dcf.key_bytes(n_bits, out_bits)) and packed.dtype == jnp.uint8
        back = dcf.unpack_key(packed, n_bits=n_bits, out_bits=out_bits)
        for a, b in zip(back, key):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        pad = 8 * dcf.key_bytes(n_bits, out_bits) - bits
        if pad:  # the zero padding of the last byte
            assert int(jnp.max(packed[:, -1] >> (8 - pad))) == 0
    shares = [dcf.dcf_eval(p, dcf.unpack_key(dcf.pack_key(k, n_bits=n_bits, out_bits=out_bits), n_bits=n_bits,
                                             out_bits=out_bits), x, n_bits=n_bits, out_bits=out_bits)
              for p, k in enumerate(keys)]
    np.testing.assert_array_equal(np.asarray(shares[0] + shares[1]) & _mask(out_bits), np.where(x < alpha, beta, 0))


@pytest.mark.parametrize("n_bits,out_bits", [(15, 1), (63, 1), (8, 16), (31, 64), (20, 37)])
def test_correction_words_round_trip(n_bits, out_bits):
    """The dealer's uint64 wire form of the correction words, plus a party's own root
    seed, gives back that party's key."""
    rng = np.random.default_rng(n_bits + 1000)
    roots = _root_words(N, request=60)
    keys = dcf.dcf_keygen(roots, _uniform(rng, n_bits, N), _uniform(rng, out_bits, N), n_bits=n_bits,
                          out_bits=out_bits)
    words = dcf.pack_corrections(keys[0], n_bits=n_bits, out_bits=out_bits)
    assert words.shape == (N, dcf.correction_words(n_bits, out_bits)) and words.dtype == jnp.uint64
    assert 64 * (dcf.correction_words(n_bits, out_bits) - 1) < dcf.correction_bits(n_bits, out_bits) + 63
    for p, key in enumerate(keys):
        back = dcf.unpack_corrections(words, dcf.seed_words(roots[p]), n_bits=n_bits, out_bits=out_bits)
        for a, b in zip(back, key):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_key_sizes_documented_examples():
    assert dcf.correction_words(15, 1) == 21 and dcf.correction_words(63, 1) == 119
    assert dcf.key_bytes(16, 1) == 195 and dcf.key_bytes(64, 64) == 1560
    assert dcf.key_bits(16, 1) == 1557


@pytest.mark.parametrize("n_bits,out_bits", [(15, 1), (31, 64), (20, 37)])
def test_correction_words_follow_the_documented_bit_string(n_bits, out_bits):
    """The wire layout, rebuilt with Python integers: after the seed words, v_cw (ℓ bits)
    per tree level, t^L, t^R per tree level, then CW_leaf's 2^ν slots, as one little-endian
    bit string over whole words (fields straddle word boundaries when ℓ does not divide
    64)."""
    rng = np.random.default_rng(n_bits * out_bits)
    count = 8
    keys = dcf.dcf_keygen(_root_words(count, request=70), _uniform(rng, n_bits, count),
                          _uniform(rng, out_bits, count), n_bits=n_bits, out_bits=out_bits)
    key = jax.tree.map(np.asarray, keys[0])
    words = np.asarray(dcf.pack_corrections(keys[0], n_bits=n_bits, out_bits=out_bits))
    for e in range(count):
        string, pos = 0, 0
        for value in key.cw_value[:, e]:
            string |= int(value) << pos
            pos += out_bits
        for bits in key.cw_bits[:, e]:
            string |= (int(bits) & 1) << pos | (int(bits) >> 1 & 1) << (pos + 1)
            pos += 2
        for w, word in enumerate(key.cw_leaf[:, e]):
            string |= int(word) << (pos + 64 * w)
        rest = words[e, 2 * key.cw_seed.shape[0]:]  # after the m seed corrections
        assert sum(int(w) << (64 * i) for i, w in enumerate(rest)) == string
