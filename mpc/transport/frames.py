"""The binary frame format: one message = a list of numpy arrays, nothing executable.

All integers little-endian. A message is a fixed 48-byte header, a block of array
descriptors, then the arrays' payloads back to back:

    offset size  field
    0      4     magic b"PSPC"
    4      2     wire-format version (WIRE_VERSION)
    6      1     kind: 0 data, 1 goodbye, 2 hello (the handshake's two frames)
    7      1     reserved, 0
    8      16    session id
    24     8     message counter, per direction: hello 0, verdict 1, then 2, 3, ... (goodbye too)
    32     4     number of arrays n
    36     4     descriptor bytes  = sum_i (10 + 8 * ndim_i)
    40     8     payload bytes     = sum_i payload_i
    48     ...   n descriptors: u8 dtype code, u8 ndim, ndim x u64 shape, u64 payload_i
    ...    ...   n payloads; payload_i = size_i * itemsize_i, or ceil(size_i / 8) for bool
                 (np.packbits of the flattened array, big bit order)

Framing overhead: 48 + sum_i (10 + 8 * ndim_i) bytes per message; a goodbye is 48 bytes.

A receiver checks the magic, version, kind, session id and counter, the dtype codes and
that every declared length agrees with its shape, and rejects a message whose payload
exceeds its limit before allocating anything (`FrameError`). Payloads are read straight
into freshly allocated arrays, so memory beyond the message itself stays bounded by the
chunk size.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Callable, Sequence

import numpy as np

from mpc.transport.errors import FrameError

MAGIC = b"PSPC"
WIRE_VERSION = 1
HEADER = struct.Struct("<4sHBB16sQIIQ")
HEADER_BYTES = HEADER.size  # 48
DATA, GOODBYE, HELLO = 0, 1, 2
KIND_NAMES = {DATA: "data", GOODBYE: "goodbye", HELLO: "hello"}

# The only dtypes that travel; codes are part of the wire format, never renumber.
DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype("u1"): 1, np.dtype("<i4"): 2, np.dtype("<i8"): 3, np.dtype("<u8"): 4,
    np.dtype("<f4"): 5, np.dtype("<f8"): 6, np.dtype("bool"): 7,
}
CODE_DTYPES = {code: dt for dt, code in DTYPE_CODES.items()}
BOOL_CODE = 7
MAX_NDIM = 32
MAX_ARRAYS = 1 << 16
MAX_DESCRIPTOR_BYTES = MAX_ARRAYS * 18  # plenty for many low-rank arrays; bounded
DEFAULT_MAX_MESSAGE_BYTES = 4 << 30  # payload limit per message (4 GiB)
SESSION_ID_BYTES = 16


# Descriptor after its two leading bytes (dtype code, ndim): shape then payload bytes.
_DESC_TAIL = [struct.Struct(f"<{n}QQ") for n in range(MAX_NDIM + 1)]
_DESC = [struct.Struct(f"<BB{n}QQ") for n in range(MAX_NDIM + 1)]


@dataclasses.dataclass
class Frame:
    """An encoded message ready to write: small `head` bytes plus payload buffers."""

    head: bytes  # header + descriptors
    payloads: list[memoryview]  # flat uint8 views, kept alive by `_keep`
    payload_bytes: int
    _keep: list[np.ndarray]

    @property
    def framing_bytes(self) -> int:
        return len(self.head)

    @property
    def nbytes(self) -> int:
        return len(self.head) + self.payload_bytes


def _wire_array(x, copy: bool) -> tuple[int, tuple[int, ...], np.ndarray]:
    """(dtype code, shape, flat uint8 payload) of one array, validated."""
    a = x if type(x) is np.ndarray else np.asarray(x)
    code = DTYPE_CODES.get(a.dtype)
    if code is None:
        dt = a.dtype
        if dt.kind in "iuf" and dt.byteorder == ">":  # the wire is little-endian
            return _wire_array(a.astype(dt.newbyteorder("<")), copy=False)
        allowed = ", ".join(str(d) for d in CODE_DTYPES.values())
        raise FrameError(f"dtype {a.dtype} cannot be sent: use one of {allowed}")
    if a.ndim > MAX_NDIM:
        raise FrameError(f"an array of {a.ndim} dimensions cannot be sent (at most {MAX_NDIM})")
    if code == BOOL_CODE:
        payload = np.packbits(a.reshape(-1))  # a new array: never aliases the caller's
    elif not a.flags.c_contiguous:
        payload = np.ascontiguousarray(a).reshape(-1).view(np.uint8)  # a copy already
    else:
        # `send` returns before the bytes leave: snapshot arrays the caller could still
        # change. Read-only arrays (e.g. np.asarray of a jax.Array) travel without a copy.
        b = a.copy() if copy and a.flags.writeable else a
        payload = b.reshape(-1).view(np.uint8)
    return code, a.shape, payload


def encode(kind: int, session_id: bytes, counter: int, arrays: Sequence, *, copy: bool = False,
           max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Frame:
    """Encode one message. `copy`: snapshot writeable arrays (for asynchronous sends)."""
    if len(arrays) > MAX_ARRAYS:
        raise FrameError(f"a message of {len(arrays)} arrays cannot be sent (at most {MAX_ARRAYS})")
    descs, payloads, total = [], [], 0
    for x in arrays:
        code, shape, payload = _wire_array(x, copy)
        descs.append(_DESC[len(shape)].pack(code, len(shape), *shape, payload.size))
        payloads.append(payload)
        total += payload.size
    desc = b"".join(descs)
    if total > max_message_bytes:
        raise FrameError(f"message of {_size(total)} exceeds the {_size(max_message_bytes)} limit")
    head = HEADER.pack(MAGIC, WIRE_VERSION, kind, 0, session_id, counter, len(payloads), len(desc), total)
    return Frame(head + desc, [memoryview(p) for p in payloads if p.size], total, payloads)


@dataclasses.dataclass
class Message:
    kind: int
    session_id: bytes
    counter: int
    arrays: list[np.ndarray]
    framing_bytes: int
    payload_bytes: int


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def read_message(read_into: Callable[[memoryview], None], *, peer: str, session_id: bytes | None,
                 counter: int, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Read and validate one message with `read_into` (fills a buffer exactly or raises).

    `session_id=None` accepts any session (the hello, before sessions are compared);
    `counter` is the one the next frame must carry.
    """
    head = bytearray(HEADER_BYTES)
    read_into(memoryview(head))
    magic, version, kind, _, sid, ctr, n, desc_len, total = HEADER.unpack(head)
    if magic != MAGIC:
        hint = " (it speaks TLS; this end is plaintext)" if magic[:2] == b"\x16\x03" else ""
        raise FrameError(f"bad magic {bytes(magic)!r} from {peer}: not a pspec frame{hint}")
    if version != WIRE_VERSION:
        raise FrameError(f"{peer} uses wire format {version}, this end {WIRE_VERSION}")
    if kind not in KIND_NAMES:
        raise FrameError(f"unknown frame kind {kind} from {peer}")
    if session_id is not None and sid != session_id:
        raise FrameError(f"frame from {peer} carries session {sid.hex()[:12]}..., expected "
                         f"{session_id.hex()[:12]}...")
    if ctr != counter:
        what = "replayed" if ctr < counter else "out of order"
        raise FrameError(f"frame {ctr} from {peer} where frame {counter} was due ({what})")
    # Every limit is checked before anything of the declared size is allocated.
    if total > max_message_bytes:
        raise FrameError(f"{peer} announced a {_size(total)} message, above the "
                         f"{_size(max_message_bytes)} limit")
    if n > MAX_ARRAYS or desc_len > MAX_DESCRIPTOR_BYTES or desc_len < 10 * n:
        raise FrameError(f"{peer} announced {n} arrays in {desc_len} descriptor bytes: out of bounds")
    desc = bytearray(desc_len)
    read_into(memoryview(desc))
    specs, pos = [], 0
    for _ in range(n):
        if pos + 2 > desc_len:
            raise FrameError(f"descriptor block from {peer} is shorter than its {n} arrays")
        code, ndim = desc[pos], desc[pos + 1]
        if code not in CODE_DTYPES:
            raise FrameError(f"{peer} sent dtype code {code}, not in the whitelist")
        if ndim > MAX_NDIM or pos + 10 + 8 * ndim > desc_len:
            raise FrameError(f"{peer} sent a descriptor of {ndim} dimensions that does not fit")
        *shape, nbytes = _DESC_TAIL[ndim].unpack_from(desc, pos + 2)
        shape = tuple(shape)
        pos += 10 + 8 * ndim
        size = math.prod(shape)
        want = (size + 7) // 8 if code == BOOL_CODE else size * CODE_DTYPES[code].itemsize
        if nbytes != want:
            raise FrameError(f"{peer} declared {nbytes} payload bytes for a {CODE_DTYPES[code]} "
                             f"array of shape {shape} ({want} expected)")
        specs.append((code, shape, size, nbytes))
    if pos != desc_len or sum(s[3] for s in specs) != total:
        raise FrameError(f"descriptor block from {peer} disagrees with its header")
    arrays = []
    for code, shape, size, nbytes in specs:
        if code == BOOL_CODE:
            packed = np.empty(nbytes, np.uint8)
            if nbytes:
                read_into(memoryview(packed))
            arrays.append(np.unpackbits(packed, count=size).astype(bool).reshape(shape))
        else:
            a = np.empty(shape, CODE_DTYPES[code])
            if nbytes:
                read_into(memoryview(a.reshape(-1).view(np.uint8)))
            arrays.append(a)
    return Message(kind, bytes(sid), ctr, arrays, HEADER_BYTES + desc_len, total)
