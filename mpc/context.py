"""The MPC session context and `secure_jit`.

A `Context` bundles what every protocol needs: the frozen config (static), the channel
(which records into the ledger) and the dealer. Protocols take it as their first argument
and never read globals.

`secure_jit(fn)` compiles `fn(ctx, *arrays, **static)` once per input signature, cut at
its host callbacks into pure stages (`mpc.stages`). The ledger entries recorded while
tracing depend only on shapes, so they are captured at trace time and added once per
call; dealer randomness is drawn fresh on every call through host callbacks, in program
order (see `mpc.dealer`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import numpy as np

from mpc.approx import NonlinearConfig
from mpc.channel import BOTH, PartyChannel, SimChannel
from mpc.dealer import Dealer, PartyDealer
from mpc.fixed import FixedPoint, decode
from mpc.ledger import Ledger
from mpc.shares import CLIENT, Shared, local
from mpc.stages import StagedProgram


COMPARISONS = ("kogge-stone", "dcf")


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Static protocol configuration (a jit static argument; never mutated).

    Attributes:
      fixed: the fixed-point format (fractional bits).
      compare_bits: bits examined by comparisons. 64 is exact for every ring value; a
        smaller ℓ is exact for |x| < 2^(ℓ−1) (in ring units) and saves rounds and bytes.
      weight_frac_bits: fractional bits of the server's block weights (a caller's choice:
        `pspec_jax.secure.ops.prepare_params` uses it inside the transformer blocks). A
        weight product is truncated by the weight's own scale, so more bits cut the
        weights' rounding error at no cost in bytes or rounds, while the untruncated
        product stays in range: |x·w| < 2^(62 − frac_bits − weight_frac_bits).
      comparison: how every comparison (msb, and so lt, relu and the nonlinear ops) is
        computed: "kogge-stone" (a dealer-AND-triple carry circuit, 1 + ⌈log2(ℓ − 1)⌉
        rounds, little dealer data) or "dcf" (function secret sharing: 1 round, DCF keys
        of ~2ℓ words per element from the dealer; `mpc.protocols.fss`).
    """

    fixed: FixedPoint = FixedPoint()
    compare_bits: int = 64
    nonlinear: NonlinearConfig = NonlinearConfig()  # approximation parameters (mpc.approx)
    weight_frac_bits: int = 16
    comparison: str = "kogge-stone"

    def __post_init__(self):
        if not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64], got {self.compare_bits}")
        if not 1 <= self.weight_frac_bits <= 30:
            raise ValueError(f"weight_frac_bits must be in [1, 30], got {self.weight_frac_bits}")
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}, got {self.comparison!r}")

    @property
    def frac_bits(self) -> int:
        return self.fixed.frac_bits


class Context:
    """One MPC session: config, ledger, channel, dealer, and the parties whose programs
    run here — both in simulation (the default), one in a party process
    (`mpc.runtime.party_context`)."""

    def __init__(self, config: MPCConfig = MPCConfig(), seed: bytes | None = None,
                 ledger: Ledger | None = None, channel=None, dealer=None, split: bool = False) -> None:
        """`split`: run every `secure_jit` program as an offline program (the dealer's
        draws and corrections) and an online one (the protocol, the material as inputs),
        each timed in `phase_seconds`; bit-identical to the unsplit program."""
        self.config = config
        self.ledger = ledger if ledger is not None else Ledger()
        self.channel = channel if channel is not None else SimChannel(self.ledger)
        self.dealer = dealer if dealer is not None else Dealer(self.channel, seed=seed)
        self.split = split
        self.phase_seconds = {"offline": 0.0, "online": 0.0}
        self.compile_seconds = 0.0  # tracing, cutting and compiling (or loading) its programs
        self._programs: dict[Any, tuple[Any, list]] = {}

    @property
    def parties(self) -> tuple[int, ...]:
        return self.channel.parties

    # --- inputs and outputs ------------------------------------------------------------
    def share(self, x, owner: int = CLIENT, frac: int | None = None) -> Shared:
        """Secret-share `owner`'s private real-valued input (fixed-point encoded).

        The non-owner's share is drawn from a key the two parties agree on once per
        session, so sharing an input costs no online bytes.
        """
        frac = self.config.frac_bits if frac is None else frac
        enc = FixedPoint(frac).encode(x) if frac else np.asarray(x).astype(np.int64).astype(np.uint64)
        return self.share_ring(enc, owner, frac)

    def share_ring(self, value, owner: int = CLIENT, frac: int = 0) -> Shared:
        """Secret-share ring elements held by `owner` (see `share`)."""
        peer_share = self.dealer.pairwise_mask(np.shape(value))
        return local(self.parties, lambda p: jax.numpy.asarray(value, jax.numpy.uint64) - peer_share
                     if p == owner else peer_share, frac)

    def reveal(self, x: Shared, to=BOTH, op: str = "reveal") -> jax.Array:
        """Open a shared value and decode it to float64 at its scale."""
        ring = self.channel.open(op, x, to=to)
        return decode(ring, x.frac) if x.frac else ring.astype(np.int64)


def _offline(ctx: Context, fn: Callable, args, static) -> StagedProgram:
    """The offline program of `fn`: `fn` traced with the dealer recording its draws and the
    channel dry (no message; openings read as zeros), the draws' results as the only
    outputs — the protocol's own arithmetic, which nothing depends on, is dropped. Its
    ledger entries are the online program's."""
    def offline(*a):
        drawn: list = []
        with ctx.dealer.recording(drawn), ctx.channel.dry_run():
            fn(ctx, *a, **static)
        return drawn

    with ctx.ledger.capture():
        return StagedProgram(offline, args)


def _replayed(ctx: Context, fn: Callable, material, args, static):
    with ctx.dealer.replaying(material):
        return fn(ctx, *args, **static)


def restart_party_context(ctx: Context, link, keys: dict, fetch: Callable) -> None:
    """Start party context `ctx`'s next session on the programs it has compiled: the new
    session's link, keys and dealer `fetch` (as for `party_context`), a fresh ledger.

    A compiled program reads the link, the keys and the dealer's request counter through
    the context's channel and dealer objects when it runs (never at trace time), so the
    programs stay valid and a server compiles each shape once, not once per session (a
    staged program's messages are sent by the calling thread, so when a call returns, its
    messages are out).
    """
    if not isinstance(ctx.dealer, PartyDealer):
        raise TypeError("only a party process's context restarts (a simulation makes a new one)")
    ctx.ledger = Ledger()
    ctx.channel.rebind(link, ctx.ledger)
    ctx.dealer.restart(keys, fetch)


def party_context(party: int, link, keys: dict, fetch: Callable, config: MPCConfig = MPCConfig(),
                  ledger: Ledger | None = None, split: bool = False) -> Context:
    """Party `party`'s side of a session: its end of the client–server `link`, its own
    keys (its dealer key, the pairwise key, its private key), and `fetch([(nonce, request,
    handles), ...])`, which returns their corrections from the dealer (`PartyDealer`: the
    requests of one host step come together). Shared tensors built here
    hold this party's share only. `split`: as `Context`'s (the offline program asks the
    dealer for the corrections; the online one talks only to the peer)."""
    ledger = ledger if ledger is not None else Ledger()
    channel = PartyChannel(ledger, link, party)
    return Context(config, ledger=ledger, channel=channel, dealer=PartyDealer(channel, party, keys, fetch),
                   split=split)


def secure_jit(fn: Callable) -> Callable:
    """Compile `fn(ctx, *args, **static)`; count its communication once per call.

    `args` is a pytree of arrays / shared tensors; keyword arguments are static (hashable)
    and part of the cache key.

    With `ctx.split` the program runs as two (`_offline`): offline, the dealer's
    draws and corrections (its outputs: the material); online, the protocol with the
    material as inputs. The parties' values never reach the offline program, so it can
    run ahead of them; each phase's wall time adds to `ctx.phase_seconds` (the call waits
    for each phase to finish, to time it).

    `wrapped.precompile(ctx, *args, executor=None, **static)` traces the program without
    running it (args may be `jax.ShapeDtypeStruct` leaves) and returns its abstract
    outputs; with a `concurrent.futures` executor the XLA compilation runs there, so
    several programs compile in parallel (tracing stays in the calling thread: call it
    from the thread that runs the context, never while another thread runs it).
    """

    def program(ctx: Context, args, static, executor=None):
        leaves, tree = jax.tree_util.tree_flatten(args)
        sig = tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves)
        key = (fn, tree, sig, tuple(sorted(static.items())), ctx.split)
        if key not in ctx._programs:
            t0 = time.perf_counter()
            if ctx.split:
                offline = _offline(ctx, fn, args, static)
                with ctx.ledger.capture() as entries:
                    online = StagedProgram(lambda m, *a: _replayed(ctx, fn, m, a, static), (offline.out_info, *args))
                programs = (offline.compile(executor), online.compile(executor))
            else:
                with ctx.ledger.capture() as entries:
                    online = StagedProgram(lambda *a: fn(ctx, *a, **static), args)
                programs = online.compile(executor)
            ctx._programs[key] = (programs, entries, online.out_info)
            ctx.compile_seconds += time.perf_counter() - t0
        return ctx._programs[key]

    @functools.wraps(fn)
    def wrapped(ctx: Context, *args, **static):
        programs, entries, _ = program(ctx, args, static)
        if ctx.split:
            offline, online = programs
            t0 = time.perf_counter()
            material = jax.block_until_ready(offline(*args))
            t1 = time.perf_counter()
            out = jax.block_until_ready(online(material, *args))
            ctx.phase_seconds["offline"] += t1 - t0
            ctx.phase_seconds["online"] += time.perf_counter() - t1
        else:
            out = programs(*args)
        ctx.ledger.extend(entries)
        return out

    def precompile(ctx: Context, *args, executor=None, **static):
        return program(ctx, args, static, executor)[2]

    wrapped.precompile = precompile
    return wrapped
