"""`pspec generate "PROMPT" --mode plain|spec|secure|post ...`

Modes are runners in a registry: `MODES[name]` is either a callable
`runner(req: GenerateRequest) -> GenerationResult` or a lazy "module:function" string,
imported only when that mode is chosen. Other parts register theirs without editing
this file, e.g. in their module: `from pspec_jax.commands.generate import register_mode`
(or by providing the lazily named function below). A runner streams ids through
`req.on_tokens(list_of_ids)` and returns a `pspec_jax.decode.GenerationResult`. The
options `--network`, `--privacy`, `--profile` are parsed and checked here, before any
model loads, for the modes that take them (`MODE_OPTIONS`); any other mode refuses them.

Randomness: without `--seed` the client's draws (sampling, drafting, POST's thresholds)
are keyed from os.urandom; `--seed N` reproduces a run, and a seeded run is not private
(`--json` says `"seeded"`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Callable

from pspec_jax.errors import UserError

# name -> runner or "module:function" (resolved lazily).
MODES: dict[str, Any] = {
    "plain": "pspec_jax.commands.generate:run_plain",
    "spec": "pspec_jax.commands.generate:run_spec",
    "secure": "pspec_jax.commands.secure_modes:run_secure",
    "post": "pspec_jax.commands.secure_modes:run_post",
}


# name -> the options it takes among seed, network, privacy, profile. Standard secure
# decoding samples with randomness of both parties inside MPC: no client seed applies.
MODE_OPTIONS: dict[str, frozenset[str]] = {
    "plain": frozenset({"seed"}),
    "spec": frozenset({"seed"}),
    "secure": frozenset({"network", "profile"}),
    "post": frozenset({"seed", "network", "privacy", "profile"}),
}
OPTIONAL = ("seed", "network", "privacy", "profile")  # refused by the modes that do not take them
DEFAULT_NETWORK, DEFAULT_PRIVACY = "lan", "strict"
DEFAULT_GAMMA = 4


def register_mode(name: str, runner: Callable[["GenerateRequest"], Any],
                  options: frozenset[str] = frozenset({"seed"})) -> None:
    """Adds a mode; `options`: which of seed, network, privacy, profile it takes."""
    MODES[name] = runner
    MODE_OPTIONS[name] = frozenset(options)


def resolve_mode(name: str) -> Callable[["GenerateRequest"], Any]:
    r = MODES.get(name)
    if r is None:
        raise UserError(f"unknown mode {name!r} (choose from {', '.join(MODES)})")
    if isinstance(r, str):
        mod, fn = r.split(":")
        if importlib.util.find_spec(mod) is None:
            raise UserError(f"mode {name!r} is not available in this build ({mod} is missing)")
        r = getattr(importlib.import_module(mod), fn, None)
        if r is None:
            raise UserError(f"mode {name!r} is not available in this build ({mod}.{fn} is missing)")
    return r


@dataclasses.dataclass
class GenerateRequest:
    """Everything a mode runner needs; `drafter()` loads the public model on first call."""

    args: argparse.Namespace
    private: Any  # ModelBundle
    prompt_ids: list[int]
    sampling: Any  # pspec_jax.decode.Sampling
    max_new_tokens: int
    gamma: int
    seed: int | None  # None: keyed from os.urandom (the private default)
    eos_id: int | None
    on_tokens: Callable[[list[int]], None]
    _drafter: Any = None

    def drafter(self):
        if self._drafter is None:
            self._drafter = load_drafter(self.args, self.private)
        return self._drafter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=None, help="the prompt text")
    parser.add_argument("--prompt-file", metavar="PATH", default=None, dest="prompt_file",
                        help="read the prompt (UTF-8) from PATH instead")
    parser.add_argument("--mode", default="spec", choices=list(MODES),
                        help="plain: private model in the clear; spec: plain speculative "
                             "decoding; secure / post: under 2PC (default: spec)")
    parser.add_argument("--chat", action="store_true",
                        help="wrap the prompt in the model's chat template (a user turn)")
    parser.add_argument("--gamma", type=int, default=None,
                        help=f"drafts per step, a chain (default {DEFAULT_GAMMA})")
    parser.add_argument("--tree", type=int, default=None, metavar="N",
                        help="spec and post: draft a token tree of up to N nodes per step (a public "
                             "shape for N) instead of a chain, verified in one pass with an exact "
                             "multi-candidate rule")
    parser.add_argument("--adaptive", action="store_true",
                        help="with --tree: stop drafting a tree once the drafter's estimate that the "
                             "private model reaches the next node is low (post: the server sees the "
                             "node count)")
    parser.add_argument("--max-new-tokens", type=int, default=64, dest="max_new_tokens")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="0 = greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, default=0, dest="top_k", help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, dest="top_p", help="1 = off")
    parser.add_argument("--seed", type=int, default=None,
                        help="reproduce a run (tests, benchmarks). Without it the client's "
                             "randomness comes from os.urandom; a seeded run is NOT private")
    parser.add_argument("--private", metavar="MODEL", default=None,
                        help="private model: DEFAULT (the server's fine-tune of SmolLM2-135M-Instruct), "
                             "base (the public base itself), or an HF folder / .gguf")
    parser.add_argument("--public", metavar="PATH", default=None,
                        help="drafter: HF folder or .gguf (default: the distilled drafter if "
                             "`pspec distill` made one, else the private model truncated)")
    parser.add_argument("--drafter-layers", type=int, default=None, dest="drafter_layers",
                        help="layers of the truncated drafter (when --public is not given)")
    parser.add_argument("--ignore-eos", action="store_true", dest="ignore_eos",
                        help="do not stop at the end-of-sequence token")
    parser.add_argument("--json", action="store_true", help="print one JSON object, no streaming")
    # For the secure modes only (MODE_OPTIONS); plain and spec refuse them.
    parser.add_argument("--network", default=None,
                        help=f"network preset of the cost model, secure and post modes (lan, wan, dc; "
                             f"default {DEFAULT_NETWORK})")
    parser.add_argument("--privacy", default=None,
                        help=f"privacy mode, post only (strict, paper; default {DEFAULT_PRIVACY})")
    parser.add_argument("--profile", action="store_true", help="per-op cost profile (secure and post)")
    parser.add_argument("--server", metavar="HOST:PORT", default=None,
                        help="run secure/post with a real server process (`pspec serve`) instead of the "
                             "simulation; needs --dealer")
    parser.add_argument("--dealer", metavar="HOST:PORT", default=None, help="the dealer process (`pspec dealer`)")
    from pspec_jax.commands.netopts import add_party_arguments

    add_party_arguments(parser)


def load_private(args: argparse.Namespace):
    from pspec_jax.models.default import resolve_private

    return resolve_private(args.private)


def load_private_public(args: argparse.Namespace):
    from pspec_jax.models.default import resolve_private_public

    return resolve_private_public(args.private)


def default_drafter(private):
    """The drafter used when none is named: for the default private model (or the base), the
    distilled one (`distill.export.default_drafter`: built once into $PSPEC_HOME/drafters/
    default from the public base and the shipped delta, or the one `pspec distill` wrote
    there), else (any other private model) the private model truncated to
    DEFAULT_DRAFTER_LAYERS layers — a stand-in for tests and one's own models, where the
    caller holds both."""
    from pspec_jax.models import DEFAULT_DRAFTER_LAYERS
    from pspec_jax.models.default import BASE_NAME, PRIVATE_NAME

    if private.name in (PRIVATE_NAME, BASE_NAME):
        from distill.export import default_drafter as distilled

        return distilled()
    if not private.params:
        raise UserError("name the drafter with --public: the client holds no weight of the private "
                        "model to truncate")
    return private.truncated(min(DEFAULT_DRAFTER_LAYERS, private.config.n_layers))


def load_drafter(args: argparse.Namespace, private):
    from pspec_jax.models import load_model

    if args.public:
        if args.drafter_layers is not None:
            raise UserError("give either --public or --drafter-layers, not both")
        return load_model(args.public)
    if args.drafter_layers is None:
        return default_drafter(private)
    if not private.params:
        raise UserError("--drafter-layers truncates the private model, which the client does not "
                        "hold in a real run; name a drafter with --public")
    return private.truncated(args.drafter_layers)


def encode_prompt(tok, prompt: str, chat: bool) -> list[int]:
    if tok is None:
        raise UserError("the private model has no tokenizer (tokenizer.json), so a text "
                        "prompt cannot be encoded")
    if chat:
        if not getattr(tok, "chat_template", None):
            raise UserError("the model's tokenizer has no chat template; drop --chat")
        text = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                       add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])
    # No BOS: SmolLM2's tokenizer (HF and GGUF alike, add_bos_token=False) adds none, and the
    # reference continuation of "Once upon a time" is reproduced without it.
    return list(tok(prompt)["input_ids"])


class _Streamer:
    """Prints the decoded text of the ids so far, holding back incomplete UTF-8."""

    def __init__(self, tok, enabled: bool):
        self.tok, self.enabled, self.ids, self.shown = tok, enabled, [], ""

    def __call__(self, new: list[int]) -> None:
        self.ids.extend(new)
        if not self.enabled:
            return
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        sys.stdout.write(text[len(self.shown):] if text.startswith(self.shown) else "")
        sys.stdout.flush()
        self.shown = text


def run_plain(req: GenerateRequest):
    from pspec_jax.decode import generate_plain

    return generate_plain(req.private, req.prompt_ids, req.max_new_tokens, req.sampling,
                          req.seed, req.eos_id, req.on_tokens)


def run_spec(req: GenerateRequest):
    from pspec_jax.decode import generate_spec, generate_tree

    if getattr(req.args, "tree", None) is not None:
        return generate_tree(req.private, req.drafter(), req.prompt_ids, req.max_new_tokens,
                             req.args.tree, req.sampling, req.seed, req.eos_id, req.on_tokens,
                             adaptive=req.args.adaptive)
    return generate_spec(req.private, req.drafter(), req.prompt_ids, req.max_new_tokens,
                         req.gamma, req.sampling, req.seed, req.eos_id, req.on_tokens)


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x != x else format(x, spec)


def summary_line(res) -> str:
    parts = [f"[{res.mode}] {len(res.tokens)} tokens in {res.seconds:.2f} s "
             f"({_fmt(res.tokens_per_second, '.1f')} tok/s after the first step; prefill "
             f"{res.prefill_seconds:.2f} s, first step {res.first_step_seconds:.2f} s)",
             f"{res.steps} steps", f"{_fmt(res.tokens_per_step, '.2f')} tokens/step"]
    if res.alpha_per_step:  # needs the private distribution in the clear: not in post
        parts.append(f"α {_fmt(res.alpha)}")
    if res.drafted:
        parts.append(f"acceptance {_fmt(res.acceptance_rate)}")
    if "tree" in res.extra and res.steps:
        nodes = res.extra["nodes_per_step"]
        parts.append(f"tree of <= {res.extra['tree']} nodes ({sum(nodes) / len(nodes):.1f} drafted per step"
                     f"{', adaptive' if res.extra['adaptive'] else ''})")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    generate(args)
    return 0


def remote_runner(args: argparse.Namespace):
    """The runner of a real run: this process is the client; the server and the dealer
    are `pspec serve` and `pspec dealer` processes (checked before any model loads)."""
    import time

    from pspec_jax.commands.netopts import address, party_options
    from pspec_jax.commands.secure_modes import finish_cli
    from pspec_jax.runtime.client import Client, PublicModel

    if args.mode not in ("secure", "post"):
        raise UserError(f"--server/--dealer run --mode secure or post, not {args.mode}")
    if not (args.server and args.dealer):
        raise UserError("a real run needs both --server HOST:PORT and --dealer HOST:PORT")
    server, dealer = address(args.server, "--server"), address(args.dealer, "--dealer")
    tls, emulate, emulate_dealer = party_options(args, "client")
    client = Client(server, dealer, tls=args.tls, timeout_s=args.timeout, emulate=emulate,
                    emulate_dealer=emulate_dealer)

    def run_remote(req: GenerateRequest):
        # The client knows the private model's public shape and tokenizer, never a weight.
        public = PublicModel(req.private.config, req.private.tokenizer)
        t0 = time.perf_counter()
        res = client.generate(public, req.prompt_ids, mode=args.mode,
                              drafter=req.drafter() if args.mode == "post" else None,
                              max_new_tokens=req.max_new_tokens, gamma=req.gamma, sampling=req.sampling,
                              privacy=args.privacy or DEFAULT_PRIVACY, eos_id=req.eos_id,
                              on_tokens=req.on_tokens, seed=req.seed, tree=args.tree, adaptive=args.adaptive)
        wall = time.perf_counter() - t0
        ledger = res.extra["_ledger"]
        # What the client's ledger says it sent to the server (online + set-up): the payload
        # it wrote to that socket must be exactly this (framing is counted apart).
        sent = ledger.totals("online").bytes0 + ledger.totals("setup").bytes0
        res.extra["_remote"] = {"wall_s": round(wall, 3), "emulate": args.emulate, "socket_bytes": client.stats,
                                "ledger_bytes_to_server": sent}
        lines = (f"  measured wall time {wall:.1f} s over real links (--emulate {args.emulate}); "
                 f"bytes written to the server link {client.stats['bytes_written']['server_link']:,}",)
        return finish_cli(res, args, lines)

    return run_remote


def prompt_text(args: argparse.Namespace) -> str:
    """The prompt from argv or --prompt-file; one-line errors for neither/both and for text
    that is not UTF-8 (argv bytes Python could not decode arrive as lone surrogates)."""
    if (args.prompt is None) == (args.prompt_file is None):
        raise UserError("give the prompt either as an argument or with --prompt-file (exactly one)")
    if args.prompt_file is not None:
        path = os.path.expanduser(args.prompt_file)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as err:
            raise UserError(f"cannot read --prompt-file {path}: {err.strerror or err}") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"--prompt-file {path} is not valid UTF-8 (byte 0x{raw[err.start]:02x} "
                            f"at offset {err.start})") from None
    text = args.prompt
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        c = ord(text[err.start])
        what = f"byte 0x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"U+{c:04X}"
        raise UserError(f"the prompt is not valid UTF-8 ({what} at character {err.start})") from None
    return text


def check_tree_options(args: argparse.Namespace) -> None:
    """--tree N (spec and post) and --adaptive (needs --tree); fills in the default γ when
    no tree is asked for."""
    from pspec_jax.decode.common import check_tree

    tree, adaptive = getattr(args, "tree", None), getattr(args, "adaptive", False)
    if adaptive and tree is None:
        raise UserError("--adaptive needs --tree N (it stops growing a token tree early)")
    if tree is not None:
        if args.mode not in ("spec", "post"):
            raise UserError(f"--tree does not apply to --mode {args.mode} (only to spec and post)")
        if args.gamma is not None:
            raise UserError("give either --gamma (a chain of drafts) or --tree N (a token tree), not both")
        check_tree(tree)
    if args.gamma is None:
        args.gamma = DEFAULT_GAMMA


def check_mode_options(args: argparse.Namespace) -> None:
    """Refuses the options the chosen mode does not take and checks (and fills in the
    defaults of) those it does; before any model loads."""
    from pspec_jax.decode.common import check_gamma

    resolve_mode(args.mode)
    takes = MODE_OPTIONS.get(args.mode, frozenset({"seed"}))
    for opt in OPTIONAL:
        value = getattr(args, opt)
        given = value is not None and value is not False  # `--seed 0` is given
        if given and opt not in takes:
            users = sorted(m for m, o in MODE_OPTIONS.items() if opt in o)
            raise UserError(f"--{opt} does not apply to --mode {args.mode} (only to {', '.join(users)})")
    check_tree_options(args)
    check_gamma(args.gamma, post=args.mode == "post")
    if "network" in takes:
        from pspec_jax.commands.secure_modes import check_network

        args.network = check_network(args.network or DEFAULT_NETWORK)
    if "privacy" in takes:
        from pspec_jax.decode.post import check_privacy

        args.privacy = check_privacy(args.privacy or DEFAULT_PRIVACY)


def generate(args: argparse.Namespace) -> tuple[Any, GenerateRequest]:
    """Run one generation as the command line asked (streaming or --json) and return the
    result with the request it ran (`pspec demo` checks it against plain decoding)."""
    import pspec_jax  # noqa: F401  (x64 flag)
    from pspec_jax.decode import Sampling
    from pspec_jax.commands import enable_compilation_cache

    # Everything argv can get wrong is checked before the models load (seconds to minutes).
    prompt = prompt_text(args)
    check_mode_options(args)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.drafter_layers is not None and args.drafter_layers < 1:
        raise UserError(f"--drafter-layers must be >= 1, got {args.drafter_layers}")
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    if args.mode in ("secure", "post"):
        from pspec_jax.decode.secure import check_secure_sampling

        check_secure_sampling(sampling)
    runner = resolve_mode(args.mode)
    if args.server or args.dealer:
        runner = remote_runner(args)
    enable_compilation_cache()
    # A real run's client knows the private model's config and tokenizer, never a weight.
    private = load_private_public(args) if args.server or args.dealer else load_private(args)
    ids = encode_prompt(private.tokenizer, prompt, args.chat)
    if not ids:
        raise UserError("the prompt encodes to no tokens")
    eos = None if args.ignore_eos else getattr(private.tokenizer, "eos_token_id", None)
    streamer = _Streamer(private.tokenizer, enabled=not args.json)
    req = GenerateRequest(args=args, private=private, prompt_ids=ids, sampling=sampling,
                          max_new_tokens=args.max_new_tokens, gamma=args.gamma, seed=args.seed,
                          eos_id=eos, on_tokens=streamer)
    res = runner(req)
    text = private.tokenizer.decode(res.tokens, skip_special_tokens=True)
    if args.json:
        out = res.to_json(text)
        if "_remote" in res.extra:
            out.update(res.extra.pop("_remote"))
        # A seeded run is reproducible and not private (the seed predicts every client draw).
        out.update(prompt_tokens=len(ids), seeded=args.seed is not None, seed=args.seed)
        print(json.dumps(out))
    else:
        sys.stdout.write(text[len(streamer.shown):] if text.startswith(streamer.shown) else "")
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(summary_line(res), file=sys.stderr)
    return res, req
