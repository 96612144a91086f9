"""The distillation trainer on a tiny teacher/student: it learns, α rises, resume is exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import data, evaluate, sampling, students, train
from distill.prompts import EVAL, TRAIN
from pspec_jax.errors import UserError
from pspec_jax.models import arch, tiny_model


@pytest.fixture(scope="module")
def setup():
    teacher = tiny_model("llama", seed=3, n_layers=3, std=0.3)
    rng = np.random.default_rng(0)
    train_prompts = [list(rng.integers(0, 64, size=3)) for _ in range(32)]
    eval_prompts = [list(rng.integers(0, 64, size=3)) for _ in range(8)]
    pool = data.sample_pool(teacher.config, teacher.params, train_prompts, 4, 24,
                            jax.random.PRNGKey(0), k=64, temperature=1.0, eos_id=None)
    es = evaluate.make_eval_set(teacher.config, teacher.params, eval_prompts, new_tokens=12,
                                per_prompt=4, seed=1, eos_id=None)
    student = students.build_student("trunc1", teacher.config, teacher.params)
    return teacher, pool, es, student


def test_sample_pool_targets_are_the_sampling_distributions(setup):
    teacher, pool, _, _ = setup
    assert pool.tokens.shape == (128, 25) and pool.idx.shape == (128, 24, 64)
    # prompt positions (all but the last prompt token) do not train; the rest do
    assert not pool.mask[:, :2].any() and pool.mask[:, 2:].all()
    # the recorded full rows equal the teacher's distribution along the sampled sequence
    logits, _ = arch.forward(teacher.config, teacher.params, jnp.asarray(pool.tokens[:4, :-1]))
    p = np.asarray(jax.nn.softmax(logits, -1))
    rec = np.zeros_like(p)
    np.put_along_axis(rec, pool.idx[:4], pool.prob[:4], axis=-1)
    np.testing.assert_allclose(rec[:, 2:], p[:, 2:], atol=2e-5)


def test_eos_masks_later_positions():
    m = tiny_model("llama", seed=0)
    pool = data.sample_pool(m.config, m.params, [[1, 2, 3]], 8, 20, jax.random.PRNGKey(5), k=4,
                            temperature=1.0, eos_id=7)
    for row, mask in zip(pool.tokens, pool.mask):
        gen = row[3:]
        hits = np.flatnonzero(gen == 7)
        if hits.size:  # positions after the one that predicts the first EOS are masked
            assert mask[2 + hits[0]] and not mask[3 + hits[0]:].any()
        else:
            assert mask[2:].all()


@pytest.mark.parametrize("loss", ["tv", "fkl"])
def test_short_training_lowers_loss_and_raises_alpha(setup, loss):
    _, pool, es, student = setup
    tc = train.TrainConfig(loss=loss, steps=40, lr=1e-2, batch=16, warmup=4, seed=1)
    loss0 = train.mean_loss(student, student.params, pool, tc)
    a0 = evaluate.acceptance(es, student.config, student.params)["acceptance_rate"]
    res = train.train(student, pool, tc, progress=False)
    loss1 = train.mean_loss(student, res.params, pool, tc)
    a1 = evaluate.acceptance(es, student.config, res.params)["acceptance_rate"]
    assert loss1 < 0.85 * loss0, (loss0, loss1)
    assert a1 > a0 + 0.03, (a0, a1)
    # the frozen parts did not move
    np.testing.assert_array_equal(np.asarray(res.params["embed"]), np.asarray(student.params["embed"]))


def test_checkpoint_resume_is_bit_identical(setup, tmp_path):
    _, pool, _, student = setup
    tc = train.TrainConfig(loss="jsd", steps=8, lr=3e-3, batch=8, warmup=2, checkpoint_every=4)
    full = train.train(student, pool, tc, ckpt_dir=tmp_path / "a", progress=False)
    half = train.train(student, pool, tc, ckpt_dir=tmp_path / "b", stop_at=4, progress=False)
    assert len(half.losses) == 4
    rest = train.train(student, pool, tc, ckpt_dir=tmp_path / "b", progress=False)
    assert rest.steps == 4
    assert rest.losses == full.losses[4:]
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))),
                                  full.params, rest.params)
    assert all(jax.tree_util.tree_leaves(same))
    # the optimizer state too: restore both final checkpoints and compare bitwise
    tx = train.make_optimizer(tc)
    trained, _ = student.split()
    abstract = {"trained": trained, "opt": tx.init(trained), "step": jnp.asarray(0, jnp.int32)}
    sa, _ = train.Checkpoints(tmp_path / "a").restore(8, abstract)
    sb, _ = train.Checkpoints(tmp_path / "b").restore(8, abstract)
    eq = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), sa, sb)
    assert all(jax.tree_util.tree_leaves(eq)) and int(sa["step"]) == 8


def test_presets_choose_what_trains():
    m = tiny_model("llama", seed=0, n_layers=4)
    last = students.build_student("trunc3-last1", m.config, m.params)
    tr, _ = last.split()
    assert any("[2]" in k for k in tr) and not any("[0]" in k or "[1]" in k for k in tr)
    assert "['embed']" not in tr and "['final_norm']['scale']" in tr
    norms = students.build_student("trunc3-norms", m.config, m.params)
    assert all("norm" in k for k in norms.split()[0])
    fresh = students.build_student("fresh2-ff48", m.config, m.params)
    assert fresh.config.n_layers == 2 and fresh.config.d_ff == 48
    np.testing.assert_array_equal(np.asarray(fresh.params["embed"]), np.asarray(m.params["embed"]))
    assert "['embed']" not in fresh.split()[0]
    for bad in ("trunc0", "trunc3-last4", "big", "trunc9"):
        with pytest.raises(UserError):
            students.build_student(bad, m.config, m.params)


def test_keep_preset_takes_the_named_blocks():
    m = tiny_model("llama", seed=0, n_layers=5)
    st = students.build_student("keep0-1.4-lora2", m.config, m.params)
    assert st.name == "keep0-1.4-lora2" and st.config.n_layers == 3
    for j, i in enumerate((0, 1, 4)):
        np.testing.assert_array_equal(np.asarray(st.params["layers"][j]["q"]["w"]),
                                      np.asarray(m.params["layers"][i]["q"]["w"]))
    assert sorted({k.split("'")[3].split(".")[0] for k in st.split()[0] if k.startswith("['lora']")}) \
        == ["0", "1", "2"]
    assert students.parse_preset("keep0-2").name == "trunc3"  # a prefix is a truncation
    assert students.parse_blocks("0-2.5.7-8") == (0, 1, 2, 5, 7, 8)
    assert students.blocks_spec((0, 1, 2, 5, 7, 8)) == "0-2.5.7-8"
    for bad in ("keep2-1", "keep1.1", "keep0-5", "keep0.x"):
        with pytest.raises(UserError):
            students.build_student(bad, m.config, m.params)


def test_tokens_per_step_and_self_acceptance(setup):
    teacher, _, es, _ = setup
    assert evaluate.tokens_per_step(0.0, 4) == 1.0
    assert evaluate.tokens_per_step(1.0, 8) == 9.0
    assert evaluate.tokens_per_step(0.5, 4) == pytest.approx((1 - 0.5 ** 5) / 0.5)
    # the teacher against itself: alpha = 1 up to the float16 storage of p
    assert evaluate.acceptance(es, teacher.config, teacher.params)["acceptance_rate"] > 0.998


def test_sampling_matches_the_model_law():
    """Chunked prefill + cached steps sample from the model's distribution (first token)."""
    m = tiny_model("llama", seed=2)
    prompt = list(range(1, 20))  # > CHUNK: exercises both compiled shapes
    out, tgt = sampling.sample(m.config, m.params, prompt, 2000, 1, jax.random.PRNGKey(0), k=64)
    logits, _ = arch.forward(m.config, m.params, jnp.asarray([prompt]))
    p = np.asarray(jax.nn.softmax(logits[0, -1]))
    rec = np.zeros(64)
    rec[np.asarray(tgt.idx[0, 0])] = np.asarray(tgt.prob[0, 0])
    np.testing.assert_allclose(rec, p, atol=1e-5)
    freq = np.bincount(out[:, -1], minlength=64) / 2000
    assert 0.5 * np.abs(freq - p).sum() < 0.08


def test_train_and_eval_prompts_are_disjoint():
    assert not set(TRAIN) & set(EVAL)
    assert len(set(TRAIN)) == len(TRAIN) and len(set(EVAL)) == len(EVAL)


def test_lora_preset_starts_at_the_base_and_trains_only_adapters(setup):
    teacher, pool, es, _ = setup
    st = students.build_student("trunc2-lora4", teacher.config, teacher.params)
    tr, _ = st.split()
    assert all(k.startswith("['lora']") or "norm" in k for k in tr)
    base = students.build_student("trunc2", teacher.config, teacher.params)
    eff = students.effective(st.params)
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))),
                                  eff, base.params)
    assert all(jax.tree_util.tree_leaves(same))  # B = 0: W + A·B = W exactly
    tc = train.TrainConfig(loss="fkl", steps=10, lr=1e-2, batch=16, warmup=2)
    res = train.train(st, pool, tc, progress=False)
    w0 = np.asarray(base.params["layers"][0]["q"]["w"])
    w1 = np.asarray(students.effective(res.params)["layers"][0]["q"]["w"])
    assert not np.array_equal(w0, w1)
    assert np.linalg.matrix_rank(w1 - w0, tol=1e-6) <= 4


def test_time_limit_stops_early_with_a_checkpoint(setup, tmp_path):
    import time

    _, pool, _, student = setup
    tc = train.TrainConfig(loss="tv", steps=50, lr=1e-3, batch=4, warmup=2)
    res = train.train(student, pool, tc, ckpt_dir=tmp_path, deadline=time.time() - 1, progress=False)
    assert res.steps == 1 and len(res.losses) == 1
    assert train.Checkpoints(tmp_path).latest() == 1


def test_greedy_block_drop_and_its_proxy(setup):
    """The proxy is α against the cached targets (1 for the teacher itself: full rows
    here, vocab 64 = k); greedy dropping keeps block 0 and shrinks one block at a time."""
    from distill import blocks

    teacher, pool, es, _ = setup
    b = pool.batch(np.arange(16))
    full = blocks.proxy_alpha(teacher.config, teacher.params, [0, 1, 2], b)
    assert full == pytest.approx(1.0, abs=1e-4)
    hist = blocks.greedy_drop(teacher.config, teacher.params, b, 1)
    assert [len(k) for k, _ in hist] == [2, 1] and all(k[0] == 0 for k, _ in hist)
    assert all(0.0 <= s <= 1.0 for _, s in hist)
    keep, s = hist[0]
    st = students.build_student("keep" + students.blocks_spec(tuple(keep)), teacher.config, teacher.params)
    assert blocks.proxy_alpha(st.config, st.params, list(range(len(keep))), b) == pytest.approx(s, abs=1e-5)
