"""Token-tree speculative decoding in the clear (`pspec generate --mode spec --tree N`).

One step: the client's drafter grows a tree of N draft tokens below the last accepted
token (the root), the private model scores all N + 1 nodes in ONE pass with a tree
attention mask (`arch.tree_mask`: a node sees the cache and its ancestors; its position
is the cache length + its depth), a multi-candidate rejection walk accepts a
root-to-node path and adds one token, and both caches keep the accepted path's rows
only (`KVCache.keep_path`). References: SpecInfer (Miao et al. 2024, multi-step
speculative sampling), EAGLE-2 (Li et al. 2024, best-first trees by the drafter's
path confidence), SpecTr (Sun et al. 2023) and Recursive Speculative Decoding (Jeon et
al. 2024: siblings drawn WITHOUT replacement, and the matching residual rule).

Drafting (`TreeDrafter`): where the N nodes go, and which tokens they carry.
  Static shape (the default; Sequoia / Medusa-style static trees): the topology is
  `static_shape(N)`, a function of the budget N alone, so it is public: a secure
  verification derives the attention mask and the node positions from N and the node
  count only (`static_topology`), never from a token. The shape is grown once, best
  first by a PRIOR score: the root has reach 1, the j-th child of v scores
  reach(v) · a_j · Π_{i<j} (1 − a_i) (`sibling_estimates` of the rates) and gets that
  as its reach, where a_j (`SIBLING_RATES`, `TOP_SIBLING_RATES` for greedy trees) is the
  measured chance that the walk accepts the j-th child it tries at a node, having
  rejected the earlier ones (Sequoia's positional acceptance). Nodes are numbered in
  the order they were added, so every prefix 0..K is a tree. The drafter fills the
  shape in index order: node i is the next child of its parent v = shape[i−1], drawn
  from q_v without the tokens already drawn at v ("sample"), or the most probable
  token left in q_v ("top").
  Dynamic (`shape=None`; EAGLE-2): the tree grows one node at a time, best first by the
  drafter's own scores, so its topology depends on the client's data (for the clear
  only). Every node v in the tree offers a slot "v's next child", scored P(v) · e, where
  P(v) is the same estimate for v (root 1) and e the chance of accepting the new child:
    kind "top":    the child is the most probable token x left in q_v (deterministic; at
                   temperature 0 the ranking uses the drafter's softmax at temperature 1
                   so trees branch); the walk takes x with probability p_v(x) ≈ q_v(x):
                   e = q_v(x).
    kind "sample": the child is drawn from q_v restricted to the tokens not yet drawn at
                   v, renormalised (sampling without replacement); with j children
                   already at v, e = a_j · Π_{i<j} (1 − a_i), with a_i the run's own rate
                   of accepting the i-th sibling tried at a node, counted by the client
                   over its previous steps (Laplace prior 1/2; `TreeState.tries` /
                   `accepts`). A sampled child's q_v(x) says little about its acceptance
                   Σ min(p, q), so q does not enter here.
  The best slot gets the node; the node's P is its slot's score. Either way the scores
  only decide where to spend the budget: the rule below is exact for any of them. A
  node whose parent has no token left in its law (a top-k / top-p law with fewer
  tokens than children) is never drafted: drafting stops there.
Adaptive (`threshold` > 0): drafting stops before the budget N, with at least one node.
  Dynamic: once the best slot's score falls below `threshold`. Static: before node i
  (i ≥ 2) when its confidence estimate, computed from the tokens drawn before node i
  only, is below `threshold`: with conf(root) = 1 and conf(u) = conf(parent) ·
  q_parent(u's token) (the drafter's probability of the path), estimate(i) = conf(v) ·
  q_v(the token node i would take) for "top" (deterministic), conf(v) · e_r for
  "sample" (e = `sibling_estimates` of the drafter's rates, r = i's rank among its
  siblings); the tree is then the prefix 0..i−1 of the shape, so only the node count
  depends on the data. Unused slots are padding the verification never visits (the
  private pass keeps its N + 1 rows: one compiled shape; a secure pass would be sized
  by the node count, the only thing the server sees).

Verification (`RecursiveRule`), at node v with target r = p_v and children c_1, c_2, …
in the order they were drawn: try c_j with probability min(1, r(c_j) / q_j(c_j)); on
acceptance emit c_j and continue at c_j with r = p_{c_j}; on rejection set
r ← norm(max(r − q_j, 0)) and try c_{j+1}; after the last child (or at a leaf) emit a
token drawn from r. Here q_j is the law c_j was drawn from given the earlier siblings:
  sample: q_j = q_v without c_1..c_{j-1}, renormalised;      top: q_j = δ_{c_j}
(so for "top" the test is "accept c_j with probability r(c_j)" and the residual is r
with c_j removed: it is the same as drawing y ~ p_v and descending iff y is a child).

Why the output law is exactly p (proof sketch). One try is ordinary speculative
sampling: for a draft x ~ q_j, "emit x with probability min(1, r(x)/q_j(x)), else a
draw from norm(max(r − q_j, 0))" emits exactly r (Leviathan et al. 2023, Thm 1). By
backward induction over j (from "no more children: draw from r"), the tries
j, j+1, … emit exactly r as long as, given everything the walk has seen before try j,
c_j is distributed as q_j: then the tries from j+1 on replace the residual draw of try
j by a procedure with the same law. The drafter guarantees that condition: every
decision (which slot gets a node, whether to stop) uses only tokens drawn before, and
the new token is then drawn fresh from q_j (without replacement among its siblings, so
q_j is the renormalised rest; "top" is the degenerate case q_j = δ). So a node's
inclusion never depends on its own draw or on later ones, which is why the static
adaptive stop judges node i by an estimate made BEFORE drawing it. An after-the-fact
prune (draft the whole shape, then keep the smallest prefix holding every confident
node) would NOT be exact: whether c_j is kept then depends on c_j itself (a confident
c_j keeps itself; an unlikely one is dropped unless a later node is confident), so
given that it was kept, c_j leans toward the drafter's likely tokens and is no longer
distributed as q_j; the test min(1, r/q_j) then divides by the wrong law and the
output leans toward the drafter. The coins u are
independent of everything. Hence the first emitted token has law p_root; given that it
is child c, the walk continues at c with the same argument (c's children were drawn
after c, from q_c, independently of the root's coins), and so on: the emitted sequence
follows the private model token by token. With greedy p (one-hot) the test accepts c_j
iff c_j = argmax p and the residual stays that one-hot, so greedy trees follow the
private argmax path exactly. Using the WITH-replacement rule (q_j = q_v for every
sibling) on siblings drawn without replacement is wrong; `WithReplacementRule` keeps
that mistake as a negative control for the tests.

Cache invariants (B = 1; vmap the step for many runs; `TreeState`): both caches hold
tokens[:length-1] between steps. In a step the root sits at row base = length - 1 and
node i at row base + i in both caches (the drafter feeds each node as it is drawn,
with position base + depth and the tree mask). After verification both keep rows
base + path[k] moved to rows length + k (`KVCache.keep_path`), length + n rows in all.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from pspec_jax.decode.accept import acceptance_alpha, residual
from pspec_jax.decode.common import (TRACES, GenerationResult, OnTokens, check_ids, check_tree,
                                     plan_lengths, run_steps)
from pspec_jax.decode.sampling import Sampling, sample, step_key
from pspec_jax.decode.spec import check_pair, init_spec_state
from pspec_jax.errors import UserError
from pspec_jax.models.arch import forward, tree_layout, tree_mask
from pspec_jax.models.cache import KVCache
from pspec_jax.models.config import ModelConfig

F32 = jnp.float32
KINDS = ("sample", "top")
# --adaptive: stop drafting once the drafter's estimate that the walk reaches the next
# node falls below this (EAGLE-2's confidence; SpecDec++ stops on a similar signal). On
# the default pair the static estimate (the drafter's path probability) drops below it
# after 2–3 nodes although ~0.9 of first children are accepted (README): too early. The
# peakedness max q_v in place of a sampled token's q_v(x) did not help (2.83 tokens per
# step from 2.3 nodes at T = 1, against 2.56 from 2.0): this pair's acceptance tracks how
# well the drafter is aligned, not how sure it is.
ADAPTIVE_THRESHOLD = 0.05


@struct.dataclass
class TokenTree:
    """A drafted token tree, M = N + 1 slots; node 0 is the root (the last accepted
    token, already emitted); a node's parent has a smaller index than the node."""

    tokens: jax.Array  # (M,) int32; unused slots 0
    parent: jax.Array  # (M,) int32; -1 for the root and for unused slots
    depth: jax.Array  # (M,) int32; root 0 (unused slots 0)
    ancestors: jax.Array  # (M, M) bool: [i, j] = j is i or an ancestor of i
    q: jax.Array  # (M, V) float32: the drafter's law at node i (its children come from it)
    reach: jax.Array  # (M,) float32: the drafter's estimate that the walk reaches i (root 1)
    n_nodes: jax.Array  # int32 scalar: drafted nodes (root excluded), <= N
    kind: str = struct.field(pytree_node=False, default="sample")

    @property
    def valid(self) -> jax.Array:
        """(M,) bool: the root and the drafted nodes."""
        return jnp.arange(self.tokens.shape[0]) <= self.n_nodes


# a_j, j = 1, 2, …: the chance that the walk accepts the j-th child it tries at a node,
# given it reached the node and rejected the earlier siblings; ranks past the end reuse
# the last rate. Measured on the default pair (SmolLM2 fine-tune drafted by the distilled
# drafter) with the dynamic drafter's counts, N = 16, 8 held-out prompts × 64 tokens
# (`python scripts/tree_rates.py`; ranks with fewer than 20 tries left out):
#   temperature 1, "sample" (87 steps): rank 1 453/515 = 0.880, rank 2 10/21 = 0.476
#     (rank 3: 1/5, rank 4: 0/2);
#   temperature 0, "top" (94 steps):    rank 1 424/451 = 0.940, rank 2 21/25 = 0.840
#     (rank 3: 3/4, rank 4: 1/1).
# The greedy rates differ (a second-best token is often the private argmax), hence two
# tuples. With a first child this likely, the best static trees of N <= 16 are chains
# (`static_shape(16)`: a root sibling, 0.12 · 0.48, scores below depth 16's 0.88^16);
# they branch from N = 23 (sample) and N = 49 (top).
SIBLING_RATES: tuple[float, ...] = (0.88, 0.48)
TOP_SIBLING_RATES: tuple[float, ...] = (0.94, 0.84)


@dataclasses.dataclass(frozen=True)
class TreeDrafter:
    """How the client drafts its tree (a static jit argument: hashable, tuples only).
    See the module docstring.

    kind: "sample" (children drawn from q without replacement) or "top" (the drafter's
      most probable remaining tokens).
    threshold: adaptive stop (module docstring); 0 = always the full budget.
    shape: the static topology (`static_shape`: parents of nodes 1..N), filled with the
      drafter's tokens; None = the dynamic best-first tree (its topology depends on data).
    rates: the per-rank acceptance rates a_j behind the static adaptive estimate of a
      sampled node (the rates the shape was grown with).
    """

    kind: str = "sample"
    threshold: float = 0.0
    shape: tuple[int, ...] | None = None
    rates: tuple[float, ...] = SIBLING_RATES

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"tree drafter kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.threshold < 1.0:
            raise UserError(f"the adaptive threshold must be in [0, 1), got {self.threshold}")
        if self.shape is not None:
            bad = [(i + 1, v) for i, v in enumerate(self.shape) if not 0 <= v <= i] \
                if isinstance(self.shape, tuple) else []
            if not isinstance(self.shape, tuple) or not self.shape or bad:
                raise UserError(f"a tree shape is a non-empty tuple of parents, node i's parent in "
                                f"[0, i); got {self.shape!r}" + (f" (node, parent) {bad[0]}" if bad else ""))
        _check_rates(self.rates)

    def law(self, sampling: Sampling, logits: jax.Array) -> jax.Array:
        """(V,) the law a node's children are drawn from (the ranking law for "top")."""
        if self.kind == "top" and sampling.greedy:
            return jax.nn.softmax(logits.astype(F32))  # a one-hot ranks only one token
        return sampling.probs(logits)


def _check_rates(rates: tuple[float, ...]) -> None:
    if not isinstance(rates, tuple) or not rates or not all(0.0 < a < 1.0 for a in rates):
        raise UserError(f"sibling rates are a non-empty tuple of values in (0, 1), got {rates!r}")


def default_drafter(sampling: Sampling, adaptive: bool = False, threshold: float = ADAPTIVE_THRESHOLD,
                    n_nodes: int | None = None) -> TreeDrafter:
    """"sample" at temperature > 0, "top" when greedy (a greedy drafter's q is one-hot:
    sampled siblings could never differ). With `n_nodes`, the static shape for that
    budget grown with the rates measured for the kind; without, the dynamic tree."""
    kind = "top" if sampling.greedy else "sample"
    thr = threshold if adaptive else 0.0
    if n_nodes is None:
        return TreeDrafter(kind=kind, threshold=thr)
    rates = TOP_SIBLING_RATES if sampling.greedy else SIBLING_RATES
    return TreeDrafter(kind=kind, threshold=thr, shape=static_shape(check_tree(n_nodes), rates),
                       rates=rates)


def sibling_estimates(tries: jax.Array, accepts: jax.Array) -> jax.Array:
    """(N+1,) e_j = a_j Π_{i<j} (1 − a_i): the chance that the walk, having reached a
    node, accepts its (j+1)-th sampled child; a_j = (accepts_j + 1) / (tries_j + 2)."""
    a = (accepts + F32(1.0)) / (tries + F32(2.0))  # (N,)
    return _estimates_from_rates(a, jnp)


def _estimates_from_rates(a, xp):
    """(K+1,) e_j = a_j Π_{i<j} (1 − a_i) for rates a (K,), e_K = 0 (no (K+1)-th rate);
    xp = numpy (the public shape: float64, no device) or jax.numpy (in the step)."""
    before = xp.cumprod(xp.concatenate([xp.ones((1,), a.dtype), 1.0 - a]))  # (K+1,)
    return before * xp.concatenate([a, xp.zeros((1,), a.dtype)])


def _rank_rates(rates: tuple[float, ...], n: int) -> np.ndarray:
    """(n,) float64: a_j for sibling ranks 0..n-1, the last rate repeated past the end."""
    return np.asarray(rates + rates[-1:] * max(0, n - len(rates)), np.float64)[:n]


@functools.lru_cache(maxsize=64)
def static_shape(n_nodes: int, rates: tuple[float, ...] = SIBLING_RATES) -> tuple[int, ...]:
    """The static tree of `n_nodes` nodes below the root: parents of nodes 1..N.

    Grown best first by the prior score (module docstring): node v's next child (its
    j-th, j from 0) scores reach(v) · e_j, e = `sibling_estimates` of `rates` (ranks past
    len(rates) reuse the last rate); reach(root) = 1, a child's reach is its score;
    ties go to the lower parent index. Nodes are numbered in insertion order, so every
    parent index is below its child's and every prefix 0..K is a tree. Deterministic
    and public (a function of N and the rates only); cached. O(N log N).
    """
    check_tree(n_nodes)
    _check_rates(rates)
    e = _estimates_from_rates(_rank_rates(rates, n_nodes), np)  # (N+1,)
    parents: list[int] = []
    reach = [1.0]
    # One slot per node: (−score of its next child, the node, its children so far); the
    # heap pops the best score, then the lower node index.
    slots = [(-e[0], 0, 0)]
    while len(parents) < n_nodes:
        neg, v, j = heapq.heappop(slots)
        i = len(parents) + 1
        parents.append(v)
        reach.append(-neg)
        heapq.heappush(slots, (-reach[v] * e[j + 1], v, j + 1))
        heapq.heappush(slots, (-reach[i] * e[0], i, 0))
    return tuple(parents)


def static_topology(shape: tuple[int, ...], n_nodes: int,
                    M: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The public structure of a static tree with its first `n_nodes` nodes drafted,
    derived from (shape, n_nodes) alone, as `TokenTree` holds it.

    Returns (parent (M,) int32, -1 for the root and past n_nodes; depth (M,) int32, 0
    past n_nodes; ancestors (M, M) bool, [i, j] = j is i or an ancestor of i, the
    identity row past n_nodes). M defaults to len(shape) + 1.
    """
    M = len(shape) + 1 if M is None else M
    if not 1 <= n_nodes <= len(shape) or M < n_nodes + 1:
        raise UserError(f"a static tree of {len(shape)} nodes has 1..{len(shape)} drafted and "
                        f"M >= n_nodes + 1 slots; got n_nodes = {n_nodes}, M = {M}")
    parent = np.full(M, -1, np.int32)
    parent[1:n_nodes + 1] = shape[:n_nodes]
    depth, ancestors = tree_layout(tuple(parent[1:]), n_nodes)  # padding parents are never read
    return parent, depth, ancestors


def _slot_scores(tree: TokenTree, used: jax.Array, sib: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(score (M,), remaining law (M, V)) of each node's next-child slot: the estimated
    probability that the walk reaches (accepts) that child (module docstring)."""
    rem = jnp.where(used, F32(0.0), tree.q)  # (M, V)
    left = jnp.max(rem, axis=-1)  # (M,) best remaining token's q; 0: v's support is used up
    if tree.kind == "top":
        est = left  # the walk takes token x at v with probability p_v(x) ≈ q_v(x)
    else:
        kids = jnp.minimum(jnp.sum(used, axis=-1), sib.shape[0] - 1)
        est = jnp.where(left > 0, sib[kids], F32(0.0))
    score = jnp.where(tree.valid, tree.reach * est, F32(-1.0))
    return score, rem


def _sibling_ranks(shape: tuple[int, ...]) -> np.ndarray:
    """(N+1,) int32: node i's rank among its siblings (0 = its parent's first child)."""
    kids: dict[int, int] = {}
    ranks = [0]
    for v in shape:
        ranks.append(kids.get(v, 0))
        kids[v] = ranks[-1] + 1
    return np.asarray(ranks, np.int32)


def _fill_shape(drafter: TreeDrafter, M: int, tree: TokenTree, used: jax.Array, cache_d: KVCache,
                add) -> tuple[TokenTree, KVCache]:
    """Fills `drafter.shape` in index order (`add`: draft_tree's "draw node i as v's next
    child and feed it"), stopping before node i when its estimate (from the nodes before
    i only) is below the threshold or its parent's law is used up (module docstring:
    the prefix rule that keeps the law exact)."""
    parent = jnp.asarray((0,) + drafter.shape, jnp.int32)  # (M,) node i's parent (slot 0 unused)
    rank = jnp.asarray(_sibling_ranks(drafter.shape))  # (M,)
    e = jnp.asarray(_estimates_from_rates(_rank_rates(drafter.rates, M - 1), np), F32)  # (M,)
    conf = jnp.zeros((M,), F32).at[0].set(1.0)  # the drafter's probability of each node's path

    def next_node(i, tree, used, conf):
        """(parent v, v's law without its children so far, node i's estimate; −1 when
        v's law is used up). At i = M the indices clamp; `more` ignores the value."""
        v = parent[i]
        row = jnp.where(used[v], F32(0.0), tree.q[v])  # (V,)
        left = jnp.max(row)  # q_v of the token "top" would take next
        est = conf[v] * (left if drafter.kind == "top" else e[rank[i]])
        return v, row, jnp.where(left > 0, est, F32(-1.0))

    def more(carry):
        i, tree, used, conf, _ = carry
        est = next_node(i, tree, used, conf)[2]
        return (i < M) & (est >= 0) & ((i == 1) | (est >= F32(drafter.threshold)))

    def grow(carry):
        i, tree, used, conf, cache = carry
        v, row, est = next_node(i, tree, used, conf)
        c, tree, used, cache = add(i, v, row, est, tree, used, cache)
        return i + 1, tree, used, conf.at[i].set(conf[v] * tree.q[v, c]), cache

    _, tree, _, _, cache_d = jax.lax.while_loop(more, grow, (jnp.int32(1), tree, used, conf, cache_d))
    return tree, cache_d


def draft_tree(config_d: ModelConfig, sampling: Sampling, n_nodes: int, drafter: TreeDrafter,
               params_d: Any, cache_d: KVCache, tokens: jax.Array, length: jax.Array,
               key: jax.Array, sib: jax.Array | None = None) -> tuple[TokenTree, KVCache]:
    """Drafts a tree of up to `n_nodes` nodes below tokens[length-1]: the drafter's static
    shape filled in index order, or the dynamic best-first tree (module docstring). The
    drafter cache must hold tokens[:length-1]; on return it also holds the root at row
    length-1 and node i at row length-1+i (position length-1+depth). Cost: one drafter
    pass per node (N sequential single-token passes) plus the root's.
    `sib`: (N+1,) `sibling_estimates` steering the dynamic "sample" tree (default: the
    prior, no steps seen); a static shape uses its own `rates` instead."""
    M = n_nodes + 1
    if drafter.shape is not None and len(drafter.shape) != n_nodes:
        raise UserError(f"the tree shape has {len(drafter.shape)} nodes, the budget is {n_nodes}")
    base = length - 1
    S = cache_d.max_len
    root = jax.lax.dynamic_slice(tokens, (jnp.int32(0), base), (1, 1))  # (1, 1)
    logits, cache_d = forward(config_d, params_d, root, cache_d)  # (1, 1, V); root at row base
    q0 = drafter.law(sampling, logits[0, 0])  # (V,)
    V = q0.shape[-1]
    tree = TokenTree(tokens=jnp.zeros((M,), jnp.int32).at[0].set(root[0, 0]),
                     parent=jnp.full((M,), -1, jnp.int32), depth=jnp.zeros((M,), jnp.int32),
                     ancestors=jnp.eye(M, dtype=bool), q=jnp.zeros((M, V), F32).at[0].set(q0),
                     reach=jnp.zeros((M,), F32).at[0].set(1.0), n_nodes=jnp.int32(0),
                     kind=drafter.kind)
    used = jnp.zeros((M, V), bool)  # [v, x]: x already drawn as a child of v

    def add(i, v, row, reach, tree, used, cache):
        """Node i := v's next child, drawn from `row` (v's law without its children so
        far), fed to the drafter cache at row base + i."""
        if drafter.kind == "top":
            c = jnp.argmax(row).astype(jnp.int32)
        else:  # without replacement: the renormalised rest (categorical normalises)
            c = sample(jax.random.fold_in(key, i), row)
        anc_i = tree.ancestors[v] | (jnp.arange(M) == i)  # (M,)
        d = tree.depth[v] + 1
        lg, cache = forward(config_d, params_d, c.reshape(1, 1), cache.rollback(base + i),
                            positions=(base + d)[None], mask=tree_mask(base, anc_i[None], S))
        tree = tree.replace(tokens=tree.tokens.at[i].set(c), parent=tree.parent.at[i].set(v),
                            depth=tree.depth.at[i].set(d), ancestors=tree.ancestors.at[i].set(anc_i),
                            q=tree.q.at[i].set(drafter.law(sampling, lg[0, 0])),
                            reach=tree.reach.at[i].set(reach), n_nodes=i)
        return c, tree, used.at[v, c].set(True), cache

    if drafter.shape is not None:
        return _fill_shape(drafter, M, tree, used, cache_d, add)
    if sib is None:
        sib = sibling_estimates(jnp.zeros((n_nodes,), F32), jnp.zeros((n_nodes,), F32))

    def more(carry):
        i, tree, used, _ = carry
        best = jnp.max(_slot_scores(tree, used, sib)[0])
        return (i < M) & (best > 0) & ((i == 1) | (best >= F32(drafter.threshold)))

    def grow(carry):
        i, tree, used, cache = carry
        score, rem = _slot_scores(tree, used, sib)
        v = jnp.argmax(score).astype(jnp.int32)  # the slot: v's next child
        _, tree, used, cache = add(i, v, rem[v], score[v], tree, used, cache)
        return i + 1, tree, used, cache

    _, tree, _, cache_d = jax.lax.while_loop(more, grow, (jnp.int32(1), tree, used, cache_d))
    return tree, cache_d


# ----------------------------------------------------------------- verification rules
def _walk(key: jax.Array, p: jax.Array, tree: TokenTree, *, without_replacement: bool,
          accept_all: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The recursive rejection walk (module docstring). Nodes are visited in index
    order: a node's children follow it, and the children of the current node v are the
    nodes after it whose parent is v (those of rejected siblings are skipped)."""
    M, V = p.shape
    k_u, k_y = jax.random.split(key)
    u = jax.random.uniform(k_u, (M,), F32)

    def body(carry, i):
        v, r, qv, path, n, j, tried = carry  # j: children of v tried so far
        c = tree.tokens[i]
        child = tree.parent[i] == v
        if tree.kind == "top":
            q_j = jax.nn.one_hot(c, V, dtype=F32)
        elif without_replacement:  # q_v without the earlier siblings, renormalised
            q_j = qv / jnp.maximum(jnp.sum(qv), F32(1e-30))
        else:  # WRONG for siblings drawn without replacement (negative control only)
            q_j = tree.q[v]
        ok = accept_all | (u[i] * q_j[c] < r[c])
        take, rej = child & ok, child & ~ok
        r = jnp.where(take, p[i], jnp.where(rej, residual(r, q_j), r))
        qv = jnp.where(take, tree.q[i], jnp.where(rej, qv.at[c].set(0.0), qv))
        path = jnp.where(take, path.at[n].set(i), path)
        tried = tried.at[:, j].add(jnp.stack([child, take]).astype(F32))
        j = jnp.where(take, 0, j + child.astype(jnp.int32))
        return (jnp.where(take, i, v), r, qv, path, n + take.astype(jnp.int32), j, tried), None

    init = (jnp.int32(0), p[0], tree.q[0], jnp.zeros((M - 1,), jnp.int32), jnp.int32(0),
            jnp.int32(0), jnp.zeros((2, M - 1), F32))
    (_, r, _, path, n, _, tried), _ = jax.lax.scan(body, init, jnp.arange(1, M, dtype=jnp.int32))
    return path, n, sample(k_y, r), tried


@dataclasses.dataclass(frozen=True)
class RecursiveRule:
    """The exact multi-candidate rule (module docstring): recursive rejection over
    siblings, with q_j the law each sibling was actually drawn from."""

    def __call__(self, key: jax.Array, p: jax.Array,
                 tree: TokenTree) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Args:
          key: PRNG key of this step's acceptance.
          p: (M, V) the private model's laws at the M tree nodes.
          tree: the drafted tree.
        Returns:
          (path (M-1,) int32: accepted node indices, first n valid; n int32 in [0, N];
           y: the next token, drawn from the residual at the last accepted node;
           tried (2, N) float32: children tried / accepted by their position among
           their siblings, what the client learns from the path, for `sibling_estimates`).
        """
        return _walk(key, p, tree, without_replacement=True)


@dataclasses.dataclass(frozen=True)
class WithReplacementRule:
    """NEGATIVE CONTROL ONLY: SpecInfer's with-replacement rule (q_j = q_v for every
    sibling) applied to siblings drawn without replacement: not exact."""

    def __call__(self, key, p, tree):
        return _walk(key, p, tree, without_replacement=False)


@dataclasses.dataclass(frozen=True)
class AcceptFirstChild:
    """NEGATIVE CONTROL ONLY: always descends into the first child (emits the
    drafter's law along its first branch)."""

    def __call__(self, key, p, tree):
        return _walk(key, p, tree, without_replacement=True, accept_all=True)


# ----------------------------------------------------------------- the step and the loop
@struct.dataclass
class TreeState:
    """SpecState's fields (same cache invariants) plus the client's running counts of
    children tried / accepted by sibling position, which steer the "sample" drafter."""

    cache_p: KVCache
    cache_d: KVCache
    tokens: jax.Array  # (1, L) int32: prompt then emitted ids
    length: jax.Array  # int32 scalar
    step: jax.Array  # int32 scalar
    key: jax.Array  # base PRNG key of the run
    tries: jax.Array  # (N,) float32
    accepts: jax.Array  # (N,) float32


def init_tree_state(private, drafter, prompt_ids: list[int], rows: int, n_nodes: int,
                    seed: int | None | jax.Array, buffer: int | None = None) -> TreeState:
    s = init_spec_state(private, drafter, prompt_ids, rows, seed, buffer=buffer or rows + n_nodes + 3)
    z = jnp.zeros((n_nodes,), F32)
    return TreeState(cache_p=s.cache_p, cache_d=s.cache_d, tokens=s.tokens, length=s.length,
                     step=s.step, key=s.key, tries=z, accepts=z)


@struct.dataclass
class TreeStepInfo:
    n_accepted: jax.Array  # int32 scalar in [0, N]
    emitted: jax.Array  # (N+1,) int32; the first n_accepted + 1 are the new tokens
    path: jax.Array  # (N,) int32 accepted node indices (first n_accepted valid)
    n_nodes: jax.Array  # int32 scalar: nodes drafted this step
    alpha: jax.Array  # float32: mean over expanded nodes v of Σ min(p_v, q_v)
    tree: TokenTree


def tree_step_fn(config_p: ModelConfig, config_d: ModelConfig, sampling: Sampling, n_nodes: int,
                 drafter: TreeDrafter, rule: Any, params_p: Any, params_d: Any,
                 state: TreeState) -> tuple[TreeState, TreeStepInfo]:
    """One token-tree step (pure, jittable, vmappable over independent states)."""
    TRACES["tree_step"] += 1
    k_draft, k_acc = jax.random.split(step_key(state.key, state.step))
    length = state.length
    base = length - 1
    M = n_nodes + 1
    # 1. the client drafts a tree of up to N nodes.
    tree, cache_d = draft_tree(config_d, sampling, n_nodes, drafter, params_d, state.cache_d,
                               state.tokens, length, k_draft,
                               sibling_estimates(state.tries, state.accepts))
    # 2. one private pass over the root and all N slots: positions by depth, tree mask.
    mask = tree_mask(base, tree.ancestors, state.cache_p.max_len)  # (M, S)
    logits, cache_p = forward(config_p, params_p, tree.tokens[None], state.cache_p,
                              positions=base + tree.depth, mask=mask)  # (1, M, V)
    p = sampling.probs(logits[0])  # (M, V)
    # 3. walk the tree: an accepted path, then the correction / bonus token.
    path, n, y, tried = rule(k_acc, p, tree)
    idx = jnp.arange(M, dtype=jnp.int32)
    ext = jnp.concatenate([tree.tokens[path], jnp.zeros((1,), jnp.int32)])  # (M,)
    emitted = jnp.where(idx < n, ext, jnp.where(idx == n, y, 0)).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice(state.tokens, emitted[None], (jnp.int32(0), length))
    # 4. both caches keep the accepted path's rows, moved behind the root.
    cache_p = cache_p.keep_path(length, base + path, n)
    cache_d = cache_d.keep_path(length, base + path, n)
    expanded = jnp.any(tree.parent[None, :] == idx[:, None], axis=1)  # (M,) has a child
    a = acceptance_alpha(p, tree.q)
    alpha = jnp.sum(jnp.where(expanded, a, 0.0)) / jnp.maximum(jnp.sum(expanded), 1)
    info = TreeStepInfo(n_accepted=n, emitted=emitted, path=path, n_nodes=tree.n_nodes,
                        alpha=alpha, tree=tree)
    return TreeState(cache_p=cache_p, cache_d=cache_d, tokens=tokens, length=length + n + 1,
                     step=state.step + 1, key=state.key, tries=state.tries + tried[0],
                     accepts=state.accepts + tried[1]), info


tree_step = jax.jit(tree_step_fn, static_argnames=("config_p", "config_d", "sampling", "n_nodes",
                                                   "drafter", "rule"))


def generate_tree(private, drafter, prompt_ids: list[int], max_new_tokens: int = 32,
                  n_nodes: int = 8, sampling: Sampling = Sampling(), seed: int | None = None,
                  eos_id: int | None = None, on_tokens: OnTokens | None = None,
                  adaptive: bool = False, tree_drafter: TreeDrafter | None = None,
                  rule: Any = RecursiveRule()) -> GenerationResult:
    """Token-tree speculative decoding of `private` with `drafter` (ModelBundles).

    Emits exactly the private model's law (for `sampling`), like `generate_spec`, with a
    tree of up to `n_nodes` drafts per step instead of a chain. The tree is the static
    shape for `n_nodes` (what the private mode can run: its topology is public);
    `adaptive` stops filling it before the first node whose confidence estimate is below
    ADAPTIVE_THRESHOLD. `tree_drafter` overrides the drafting strategy altogether (e.g.
    `TreeDrafter("sample")`: the dynamic best-first tree). The result's `extra` holds
    the node budget and the nodes drafted per step.
    """
    check_tree(n_nodes)
    check_pair(private, drafter)
    prompt_ids = check_ids(prompt_ids, private.config)
    strategy = tree_drafter or default_drafter(sampling, adaptive, n_nodes=n_nodes)
    M = n_nodes + 1
    rows_p, max_new = plan_lengths(private.config, len(prompt_ids), max_new_tokens, M)
    rows_d, _ = plan_lengths(drafter.config, len(prompt_ids), max_new, M)
    rows = min(rows_p, rows_d)
    if rows < len(prompt_ids) + max_new + n_nodes:
        max_new = max(1, rows - len(prompt_ids) - n_nodes)
    t0 = time.perf_counter()
    state = init_tree_state(private, drafter, prompt_ids, rows, n_nodes, seed, buffer=rows + M + 3)
    jax.block_until_ready(state.cache_p.length)
    t1 = time.perf_counter()
    alphas: list[float] = []
    nodes: list[int] = []

    def step(state: TreeState) -> tuple[TreeState, int, list[int]]:
        state, info = tree_step(private.config, drafter.config, sampling, n_nodes, strategy, rule,
                                private.params, drafter.params, state)
        n = int(info.n_accepted)
        alphas.append(float(info.alpha))
        nodes.append(int(info.n_nodes))
        return state, n, [int(t) for t in info.emitted[: n + 1]]

    run = run_steps(step, state, max_new, max_new_tokens, eos_id, on_tokens)
    return run.result("spec", alpha_per_step=alphas, drafted=sum(nodes), prefill_seconds=t1 - t0,
                      extra={"tree": n_nodes, "adaptive": strategy.threshold > 0,
                             "tree_kind": strategy.kind, "tree_static": strategy.shape is not None,
                             "nodes_per_step": nodes})
