"""Oblivious selection: one entry of a shared row at an index only the client knows.

POST's "select, then compare" needs p_i(x_i) for the client's draft x_i without showing
x_i to the server and without showing the server's share to the client. With a
dealer-made random OT this costs one message each way and no comparison:

1. Dealer: the server gets random pads R (V words per row); the client gets a random
   index t and R[t].
2. Client → server: d = (x − t) mod V (uniform, hides x). Known before the secure pass,
   so it rides on the client's first message of that pass (counted, no extra round).
3. Server: picks a fresh random σ per row (re-masking its share) and sends
   M[j] = s_1[(j + d) mod V] + σ + R[j] for all j.
4. Client: M[t] − R[t] = s_1[x] + σ; its new share is s_0[x] + s_1[x] + σ, the server's −σ.

The client sees one unpadded entry of a σ-shifted share (uniform); the server sees d
(uniform). Cost per row: client ⌈log2 V / 8⌉ bytes (piggybacked), server 8·V bytes, one
round; dealer 8 bytes to the client.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mpc.context import Context
from mpc.ring import DTYPE
from mpc.shares import CLIENT, SERVER, Shared, local


def select_client_index(ctx: Context, row: Shared, index: jax.Array, op: str = "oblivious_select") -> Shared:
    """`row[..., index]` for a shared row (R, V) and client-held indices (R,) → shared (R,)."""
    if row.ndim != 2 or index.shape != row.shape[:1]:
        raise ValueError(f"select_client_index: rows {row.shape}, indices {index.shape}")
    rows, width = row.shape
    ot = ctx.dealer.index_ot(rows, width)  # client: (t, R[t]); server: (R,)
    # 2. client -> server (piggybacked): the index offset
    d = ctx.channel.send(op + "/offset", CLIENT, lambda: (jnp.asarray(index, jnp.int32) - ot[CLIENT][0]) % width,
                         jax.ShapeDtypeStruct((rows,), jnp.int32),
                         bits=max(8, 8 * math.ceil(math.log2(width) / 8)), piggyback=True)
    # 3. server -> client: its share rotated by d, re-masked by σ, padded by R
    sigma = ctx.dealer.party_random(SERVER, (rows,))

    def server_message():
        cols = (jnp.arange(width)[None, :] + d[:, None]) % width  # (R, V)
        rotated = jnp.take_along_axis(row.share(SERVER), cols, axis=1)
        return rotated + sigma[:, None] + ot[SERVER][0]

    masked = ctx.channel.send(op, SERVER, server_message, jax.ShapeDtypeStruct((rows, width), DTYPE))

    def new_share(p: int) -> jax.Array:
        if p == SERVER:
            return -sigma
        # 4. client unpads its one entry
        t, pad_t = ot[CLIENT]
        picked = jnp.take_along_axis(masked, t[:, None], axis=1)[:, 0] - pad_t  # s_1[x] + σ
        own = jnp.take_along_axis(row.share(CLIENT), jnp.asarray(index, jnp.int32)[:, None], axis=1)[:, 0]
        return own + picked

    return local(ctx.parties, new_share, row.frac)
