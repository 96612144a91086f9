"""Decoding loops: plain (reference), plain speculative; secure and POST live beside them.

Public API:
  Sampling(temperature=1.0, top_k=0, top_p=1.0)  — the processed target law; T=0 greedy
  generate_plain(model, prompt_ids, max_new_tokens, sampling, seed, eos_id, on_tokens)
  generate_spec(private, drafter, prompt_ids, max_new_tokens, gamma, sampling, seed,
                eos_id, on_tokens, rule=SpeculativeRule())
      -> GenerationResult (tokens, steps, accepted_per_step, alpha_per_step,
         acceptance_rate, alpha, tokens_per_step, tokens_per_second, to_json())
  SpeculativeRule / AlwaysAccept (negative control) — accept rules (accept.py), pure:
      rule(key, p (γ+1, V), q (γ, V), drafts (γ,)) -> (n_accepted, next_token)
  spec_step_fn / plain_step_fn — pure, jittable, vmappable single steps.
  generate_tree(private, drafter, prompt_ids, max_new_tokens, n_nodes, sampling, seed,
                eos_id, on_tokens, adaptive=False, tree_drafter=None, rule=RecursiveRule())
      token-tree speculative decoding (tree.py); TokenTree, TreeDrafter, tree_step_fn;
      RecursiveRule (exact) / WithReplacementRule, AcceptFirstChild (negative controls).
  static_shape(n_nodes, rates=SIBLING_RATES) -> parents of nodes 1..N (the default,
      public tree topology); static_topology(shape, n_nodes, M=None) -> (parent, depth,
      ancestors) numpy arrays, what both parties derive from (N, node count).
"""

from pspec_jax.decode.accept import (AlwaysAccept, SpeculativeRule, acceptance_alpha, accept_mask,
                                     first_rejection, residual)
from pspec_jax.decode.common import TRACES, GenerationResult
from pspec_jax.decode.plain import PlainState, generate_plain, plain_step, plain_step_fn
from pspec_jax.decode.sampling import Sampling, sample, step_key
from pspec_jax.decode.spec import SpecState, StepInfo, generate_spec, spec_step, spec_step_fn
from pspec_jax.decode.tree import (AcceptFirstChild, RecursiveRule, TokenTree, TreeDrafter, TreeState,
                                   WithReplacementRule, generate_tree, static_shape, static_topology,
                                   tree_step, tree_step_fn)

__all__ = [
    "AcceptFirstChild", "AlwaysAccept", "GenerationResult", "PlainState", "Sampling", "SpecState", "SpeculativeRule",
    "StepInfo", "TRACES", "accept_mask", "acceptance_alpha", "first_rejection", "generate_plain",
    "generate_spec", "plain_step", "plain_step_fn", "residual", "sample", "spec_step",
    "spec_step_fn", "step_key", "RecursiveRule", "TokenTree", "TreeDrafter", "WithReplacementRule",
    "TreeState", "generate_tree", "static_shape", "static_topology", "tree_step", "tree_step_fn",
]
