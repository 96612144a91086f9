"""SecretFlow SPU (SEMI2K, 64-bit ring FM64, 2 parties) on the shapes `pspec bench forward`
measures: the SmolLM2-135M decoder forward over T new tokens at a context of 64.

Run with SPU's OWN virtual environment (never a pspec dependency; this file imports no
pspec code):

    python3.11 -m venv /tmp/spu-venv
    /tmp/spu-venv/bin/pip install spu==0.10.0.dev20251211 'jax[cpu]==0.8.0'
    /tmp/spu-venv/bin/python scripts/bench_spu.py --tokens 1 8 [--repeats 3] [--json out.json]

Workloads (SmolLM2-135M-Instruct shapes: d 576, 9 query / 3 KV heads of 64, MLP 1536,
vocab 49,152, 30 layers, tied embedding):

  embed  the client's one-hot rows (T, 49152) @ the embedding (49152, 576)
  block  one LLaMA block over T new tokens with a 64-row KV cache: RMSNorm, q/k/v, RoPE,
         grouped-query softmax attention over 64 + T keys (causal), o, RMSNorm, SiLU-gated
         MLP 576 -> 1536 -> 576, residuals; returns the new K/V rows too
  head   the final RMSNorm and the LM head (T, 576) @ (576, 49152)

The 30 blocks have one shape, so the forward is estimated as embed + 30 x block + head
(each piece measured; the scaling is stated in the table). Every input is a SEMI2K
secret (SPU's usual setting for a private model: the server secret-shares its weights,
and each product's Beaver opening re-sends the weight's masked value on every call;
`--private-weights` instead gives the weights to rank 1 as SPU "private" values — in
this SPU version the dot still runs on shares, same bytes). Public: RoPE tables and the
causal mask. Values are random of realistic scale: cost depends on shapes only; the
output is checked against plain JAX to show the program computes the block.

Measured per piece (both parties in one process, in-memory links, threads):
  seconds   the wall time of `Runtime.run` (max over the two parties), median of
            `--repeats` runs after a first one (SPU compiles to its IR beforehand;
            sharing the inputs is not timed);
  bytes     SPU's link statistics ("Link details: total send bytes ..., send actions")
            from `enable_pphlo_profile`, rank 0 (the parties are symmetric in SEMI2K);
  sends     send actions of rank 0 (the count of messages: an upper bound on rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

D_MODEL, N_HEADS, N_KV, HEAD_DIM, D_FF, VOCAB, N_LAYERS = 576, 9, 3, 64, 1536, 49152, 30
EPS, THETA = 1e-5, 100000.0


# ----------------------------------------------------------------------------- the model
def rope_tables(positions: np.ndarray):
    inv = 1.0 / (THETA ** (np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM))
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def make_fns(T: int, ctx: int):
    import jax
    import jax.numpy as jnp

    cos, sin = rope_tables(ctx + np.arange(T))  # public
    cos, sin = cos[:, None, :], sin[:, None, :]
    # causal mask over ctx cached + T new keys: new token i sees keys j <= ctx + i (public)
    mask = (np.arange(ctx + T)[None, :] <= ctx + np.arange(T)[:, None])[None]  # (1, T, ctx+T)

    def rmsnorm(x, g):
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + EPS) * g

    def rope(x):
        h = HEAD_DIM // 2
        rot = jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return x * cos + rot * sin

    def block(x, ck, cv, g1, wq, wk, wv, wo, g2, wg, wu, wd):
        h = rmsnorm(x, g1)
        q = rope((h @ wq).reshape(T, N_HEADS, HEAD_DIM))
        k = rope((h @ wk).reshape(T, N_KV, HEAD_DIM))
        v = (h @ wv).reshape(T, N_KV, HEAD_DIM)
        keys = jnp.repeat(jnp.concatenate([ck, k], axis=0), N_HEADS // N_KV, axis=1)  # (S, H, D)
        vals = jnp.repeat(jnp.concatenate([cv, v], axis=0), N_HEADS // N_KV, axis=1)
        s = jnp.einsum("thd,shd->hts", q, keys) * (1.0 / np.sqrt(HEAD_DIM))
        s = jnp.where(mask, s, -30.0)  # public select (SPU-friendly, no -inf)
        p = jax.nn.softmax(s, axis=-1)
        a = jnp.einsum("hts,shd->thd", p, vals).reshape(T, N_HEADS * HEAD_DIM)
        x = x + a @ wo
        h = rmsnorm(x, g2)
        x = x + (jax.nn.silu(h @ wg) * (h @ wu)) @ wd
        return x, k, v

    def head(x, g, emb):
        return rmsnorm(x, g) @ emb.T

    def embed(onehot, emb):
        return onehot @ emb

    return {"block": block, "head": head, "embed": embed}


def make_inputs(T: int, ctx: int, rng: np.random.Generator):
    """Random inputs of realistic scale. Returns {piece: (args, weight_mask)} where
    weight_mask marks the server's arguments."""
    f32 = np.float32

    def w(i, o):
        return (rng.standard_normal((i, o)) / np.sqrt(i)).astype(f32)

    x = rng.standard_normal((T, D_MODEL)).astype(f32)
    ck = rng.standard_normal((ctx, N_KV, HEAD_DIM)).astype(f32)
    cv = rng.standard_normal((ctx, N_KV, HEAD_DIM)).astype(f32)
    g = (1.0 + 0.1 * rng.standard_normal(D_MODEL)).astype(f32)
    emb = (0.05 * rng.standard_normal((VOCAB, D_MODEL))).astype(f32)
    onehot = np.eye(VOCAB, dtype=f32)[rng.integers(0, VOCAB, T)]
    block = [x, ck, cv, g, w(D_MODEL, N_HEADS * HEAD_DIM), w(D_MODEL, N_KV * HEAD_DIM),
             w(D_MODEL, N_KV * HEAD_DIM), w(N_HEADS * HEAD_DIM, D_MODEL), g.copy(),
             w(D_MODEL, D_FF), w(D_MODEL, D_FF), w(D_FF, D_MODEL)]
    return {"embed": ([onehot, emb], [False, True]),
            "block": (block, [False, False, False] + [True] * 9),
            "head": ([x, g, emb], [False, True, True])}


# ----------------------------------------------------------------------------- SPU runner
@contextlib.contextmanager
def captured_fds():
    """Capture what the C++ side writes on fd 1 and 2 (SPU's profile log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        box = {}
        try:
            yield box
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            box["text"] = tmp.read().decode(errors="replace")


LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)")


def run_spu(fn, args, weight_mask, repeats: int, private_weights: bool, fxp_bits: int | None):
    import spu.api as spu_api
    import spu.libspu as libspu
    import spu.utils.frontend as spu_fe

    V = libspu.Visibility
    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64)
    if fxp_bits:
        cfg.fxp_fraction_bits = fxp_bits
    names = [f"in{i}" for i in range(len(args))]
    t0 = time.perf_counter()
    exe, out_tree = spu_fe.compile(spu_fe.Kind.JAX, fn, tuple(args), {}, names, [V.VIS_SECRET] * len(args),
                                   lambda outs: [f"out{i}" for i in range(len(outs))])
    compile_s = time.perf_counter() - t0
    io = spu_api.Io(2, cfg)
    shares = [io.make_shares(a, V.VIS_SECRET, owner_rank=1) if (private_weights and m) else io.make_shares(a, V.VIS_SECRET)
              for a, m in zip(args, weight_mask)]
    desc = libspu.link.Desc()
    for r in range(2):
        desc.add_party(f"id_{r}", f"thread_{r}")

    def once(profile: bool):
        run_s, outs, errs = [0.0, 0.0], [None, None], []
        barrier = threading.Barrier(2)

        def party(rank):
            try:
                link = libspu.link.create_mem(desc, rank)
                c = libspu.RuntimeConfig(cfg)
                c.enable_pphlo_profile = profile and rank == 0
                rt = spu_api.Runtime(link, c)
                for n, s in zip(names, shares):
                    rt.set_var(n, s[rank])
                barrier.wait()
                t = time.perf_counter()
                rt.run(exe)
                run_s[rank] = time.perf_counter() - t
                outs[rank] = [rt.get_var(n) for n in exe.output_names]
            except BaseException as e:  # noqa: BLE001
                errs.append(e)
                barrier.abort()

        th = [threading.Thread(target=party, args=(r,)) for r in range(2)]
        [t.start() for t in th]
        [t.join() for t in th]
        if errs:
            raise errs[0]
        return max(run_s), [io.reconstruct(list(o)) for o in zip(*outs)]

    with captured_fds() as log:
        _, outs = once(profile=True)
    m = LINK.findall(log["text"])
    if not m:
        raise RuntimeError("no link statistics in SPU's profile log:\n" + log["text"][-2000:])
    send_bytes, _, sends, _ = map(int, m[-1])
    times = []
    with captured_fds():
        for _ in range(repeats):
            times.append(once(profile=False)[0])
    return {"seconds": statistics.median(times), "times": times, "bytes_per_party": send_bytes,
            "sends": sends, "compile_s": compile_s}, outs


def check(fn, args, outs) -> float:
    import jax

    ref = jax.tree_util.tree_leaves(jax.jit(fn)(*args))
    return max(float(np.max(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64)))) for o, r in zip(outs, ref))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SPU SEMI2K on the SmolLM2 secure-forward shapes")
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pieces", nargs="+", default=["embed", "block", "head"])
    ap.add_argument("--private-weights", action="store_true", help="weights as rank 1's private values")
    ap.add_argument("--fxp-bits", type=int, default=None, help="fixed-point fraction bits (SPU default 18)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import jax
    import spu

    print(f"SPU {getattr(spu, '__version__', '?')} SEMI2K FM64, 2 parties (simulated, in-memory links), "
          f"jax {jax.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    rng = np.random.default_rng(0)
    rows = []
    for T in args.tokens:
        fns, inputs = make_fns(T, args.context), make_inputs(T, args.context, rng)
        row = {"T": T}
        for piece in args.pieces:
            fn = fns[piece]
            a, mask = inputs[piece]
            r, outs = run_spu(fn, a, mask, args.repeats, args.private_weights, args.fxp_bits)
            r["max_abs_err_vs_plain"] = check(fn, a, outs)
            row[piece] = r
            print(f"T={T:2d} {piece:5s}: {r['seconds']:.3f} s (median of {args.repeats}), "
                  f"{r['bytes_per_party']:,} B/party, {r['sends']} sends, compile {r['compile_s']:.1f} s, "
                  f"max |err| vs plain {r['max_abs_err_vs_plain']:.3g}", flush=True)
        if all(p in row for p in ("embed", "block", "head")):
            row["forward"] = {k: row["embed"][k] + N_LAYERS * row["block"][k] + row["head"][k]
                              for k in ("seconds", "bytes_per_party", "sends")}
        rows.append(row)
    print("\n| T | piece | SPU seconds | SPU bytes/party | SPU sends/party |")
    print("|---:|---|---:|---:|---:|")
    for row in rows:
        for piece in [*args.pieces, "forward"]:
            if piece in row:
                r = row[piece]
                label = f"forward = embed + {N_LAYERS} x block + head" if piece == "forward" else piece
                print(f"| {row['T']} | {label} | {r['seconds']:.3f} | {r['bytes_per_party']:,} | {r['sends']:,} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
