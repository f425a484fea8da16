"""GRPO trainer on a tiny model and synthetic Veason-style samples: runs, learns the right parameters, accumulates
exactly, resumes exactly, and stops on non-finite gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vrsjax.config import load_config
from vrsjax.models import qwen2_5_vl
from vrsjax.processing import Processor
from vrsjax.rl import grpo
from vrsjax.rl.sequences import prompt_data, sequence_inputs
from vrsjax.rl.trainer import GRPOSample, GRPOTrainer, NonFiniteError
from vrsjax.rl.update import micro_grads
from vrsjax.testing import write_tiny_checkpoint

SIZE = 56  # 4 x 4 patches: 4 vision tokens per frame


def synthetic_samples(count=4, frames=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        video = np.full((frames, SIZE, SIZE, 3), 110, np.uint8)
        masks = np.zeros((frames, SIZE, SIZE), bool)
        boxes = []
        for t in range(frames):
            x = int(rng.integers(0, SIZE - 16))
            video[t, 10:26, x : x + 16] = (220, 40, 40)
            masks[t, 10:26, x : x + 16] = True
            boxes.append([[x * 560 / SIZE + 0.5, 10 * 560 / SIZE + 0.5, (x + 15) * 560 / SIZE + 0.5, 250.5]])
        out.append(GRPOSample(f"s{i}", "The red square.", video, [0, 5, 10][:frames], masks, boxes))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("grpo") / "tiny", seed=0)
    return path, Processor.from_pretrained(path)


def make_trainer(tiny, tmp_path, mesh=None, samples=None, scorer=None, **overrides):
    path, proc = tiny
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"{k}={v}"
            for k, v in {
                "data.max_response_length": 12,
                "worker.rollout.n": 4,
                "data.rollout_batch_size": 2,
                "worker.actor.global_batch_size": 2,
                "worker.actor.micro_batch_size_per_device_for_update": 1,
                "worker.actor.optim.lr": 1e-3,
                "trainer.max_steps": 2,
                **overrides,
            }.items()
        ],
    )
    model = qwen2_5_vl.from_pretrained(path)
    samples = synthetic_samples() if samples is None else samples
    return GRPOTrainer(cfg, model, proc, samples, out_dir=tmp_path, mesh=mesh, scorer=scorer)


def flat(params):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(params)])


def test_steps_run_with_finite_metrics_and_move_only_the_policy(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path)
    before = flat(trainer.params)
    history = trainer.train(2)
    assert len(history) == 2 and (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    for m in history:
        assert all(np.isfinite(v) for v in m.values() if isinstance(v, float)), m
        assert {"reward/format_mean", "actor/kl_loss", "actor/entropy", "actor/clipfrac", "adv/std"} <= set(m)
    assert np.abs(flat(trainer.params) - before).max() > 0
    np.testing.assert_array_equal(flat(trainer.ref_params), before)  # the reference stays frozen


def test_sequence_inputs_equal_the_concatenated_forward(tiny):
    path, proc = tiny
    model = qwen2_5_vl.from_pretrained(path)
    samples = synthetic_samples(2)
    texts = [
        "<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * 3 + s.expression + "<|im_end|>\n"
        for s in samples
    ]
    prompts = [
        prompt_data(model.config, proc(text=[t], images=list(s.frames))) for t, s in zip(texts, samples, strict=True)
    ]
    rows, tokens = np.array([1, 0, 1]), np.random.default_rng(0).integers(0, 290, (3, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    got = np.asarray(model.forward(sequence_inputs(model.config, prompts, rows, tokens, mask)))[:, -5:]
    for i, r in enumerate(rows):
        one = proc(text=[texts[r]], images=list(samples[r].frames))
        ids = np.concatenate([one["input_ids"], tokens[i : i + 1] * mask[i : i + 1]], axis=1)
        att = np.concatenate([one["attention_mask"], mask[i : i + 1]], axis=1)
        want = np.asarray(
            model(
                input_ids=ids,
                attention_mask=att,
                pixel_values=one["pixel_values"],
                image_grid_thw=one["image_grid_thw"],
            )
        )[0, -5:]
        valid = mask[i] > 0
        assert np.abs(got[i][valid] - want[valid]).max() <= 1e-4


def test_micro_batch_gradients_add_up_to_the_mini_batch(tiny):
    path, proc = tiny
    model = qwen2_5_vl.from_pretrained(path)
    from flax import nnx

    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    samples = synthetic_samples(2)
    texts = ["<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * 3 + "x<|im_end|>\n"] * 2
    prompts = [
        prompt_data(model.config, proc(text=[t], images=list(s.frames))) for t, s in zip(texts, samples, strict=True)
    ]
    rng = np.random.default_rng(1)
    rows, tokens = np.array([0, 0, 1, 1]), rng.integers(0, 290, (4, 6))
    mask = (np.arange(6)[None] < np.array([[6], [2], [4], [1]])).astype(np.int32)
    old = jnp.asarray(rng.normal(-5, 0.3, (4, 6)), jnp.float32)
    adv = jnp.asarray([1.0, -0.5, 0.3, -1.2])
    cfg = grpo.LossConfig(entropy_coeff=1e-3, kl_coef=5e-3)
    n_tok, n_seq = float(mask.sum()), 4.0

    def grads(sl):
        inputs = sequence_inputs(model.config, prompts, rows[sl], tokens[sl], mask[sl])
        plen = inputs.input_ids.shape[1] - 6
        g, loss, _ = micro_grads(
            graphdef,
            params,
            frozen,
            inputs,
            tokens[sl],
            mask[sl],
            old[sl],
            old[sl] - 0.1,
            adv[sl],
            n_tok,
            n_seq,
            prompt_len=plen,
            temperature=1.0,
            loss_config=cfg,
        )
        return g, float(loss)

    full, loss_full = grads(slice(0, 4))
    parts = [grads(slice(i, i + 1)) for i in range(4)]
    summed = jax.tree.map(lambda *g: sum(g), *[g for g, _ in parts])
    assert abs(sum(l for _, l in parts) - loss_full) <= 1e-5
    assert np.abs(flat(summed) - flat(full)).max() <= 1e-5


def test_resume_continues_exactly(tiny, tmp_path):
    straight = make_trainer(tiny, tmp_path / "a")
    want = straight.train(2)
    first = make_trainer(tiny, tmp_path / "b")
    first.train(1)
    first.save()
    resumed = make_trainer(tiny, tmp_path / "b")
    got = resumed.train(2, resume=True)
    assert resumed.step_count == 2 and len(got) == 1
    assert got[0]["reward/score_mean"] == pytest.approx(want[1]["reward/score_mean"], abs=1e-6)
    assert got[0]["actor/loss"] == pytest.approx(want[1]["actor/loss"], abs=1e-5)
    np.testing.assert_allclose(flat(resumed.params), flat(straight.params), atol=1e-6)


def test_non_finite_rewards_skip_updates_then_stop(tiny, tmp_path):
    trainer = make_trainer(tiny, tmp_path)
    trainer.reward_fn = lambda response, sample: {"format": float("nan")}
    trainer.max_consecutive_skips = 2
    before = flat(trainer.params)
    trainer.step()
    assert trainer.skipped == 1
    np.testing.assert_array_equal(flat(trainer.params), before)
    with pytest.raises(NonFiniteError, match="2 updates in a row"):
        trainer.step()


@pytest.mark.slow
@pytest.mark.parametrize("axes", [{"fsdp": 4, "tensor": 2}, {"data": 2, "fsdp": 4}])
def test_sharded_step_equals_one_device(tiny, tmp_path, axes):
    from vrsjax.parallel.mesh import make_mesh

    greedy = {"worker.rollout.temperature": 0}  # identical tokens on both sides, so the update is comparable
    one = make_trainer(tiny, tmp_path / "one", **greedy)
    m_one = one.step()
    sharded = make_trainer(tiny, tmp_path / "mesh", mesh=make_mesh(**{"data": 1, **axes}), **greedy)
    m_sharded = sharded.step()
    q = sharded.params["model"]["language_model"]["layers"][0]["self_attn"]["q_proj"]["weight"].get_value()
    assert len({str(s.index) for s in q.addressable_shards}) > 1  # really sharded
    assert m_sharded["actor/loss"] == pytest.approx(m_one["actor/loss"], abs=1e-5)
    assert np.abs(flat(sharded.params) - flat(one.params)).max() <= 1e-5


def test_shared_prompt_passes_equal_per_sequence_passes(tiny, tmp_path):
    """Whole groups per micro-batch switch the trainer to the shared-prompt passes: same step, same numbers."""
    whole_groups = {"worker.actor.micro_batch_size_per_device_for_update": 4, "worker.rollout.temperature": 0}
    shared = make_trainer(tiny, tmp_path / "shared", **whole_groups)
    naive = make_trainer(tiny, tmp_path / "naive", **whole_groups, **{"worker.actor.shared_prompt": "false"})
    assert shared._shared(4) and not naive._shared(4)
    m_shared, m_naive = shared.step(), naive.step()
    assert m_shared["actor/loss"] == pytest.approx(m_naive["actor/loss"], abs=1e-5)
    assert np.abs(flat(shared.params) - flat(naive.params)).max() <= 1e-5


def test_lora_trains_only_adapters_and_merges_for_export(tiny, tmp_path):
    from flax import nnx

    from vrsjax.layers.lora import LoRAParam, merge_lora

    trainer = make_trainer(tiny, tmp_path, **{"worker.actor.lora_rank": 4, "worker.actor.lora_target": "q_proj,v_proj"})
    frozen_before, lora_before = flat(trainer.frozen), flat(trainer.params)
    trainer.train(2)
    np.testing.assert_array_equal(flat(trainer.frozen), frozen_before)  # base weights untouched
    assert np.abs(flat(trainer.params) - lora_before).max() > 0
    assert all(k in ("lora_a", "lora_b") for path, _ in nnx.to_flat_state(trainer.params) for k in path[-1:])
    policy = trainer.policy()
    batch = {"input_ids": np.array([[5, 6, 7, 8, 9]]), "attention_mask": np.ones((1, 5), np.int32)}
    with_adapters = np.asarray(policy(**batch))
    with pytest.raises(ValueError, match="merge_lora"):
        policy.save_pretrained(tmp_path / "export")
    merged = merge_lora(policy)
    assert not nnx.state(merged, LoRAParam)
    np.testing.assert_allclose(np.asarray(merged(**batch)), with_adapters, atol=1e-5)
    exported = qwen2_5_vl.from_pretrained(merged.save_pretrained(tmp_path / "export"))
    np.testing.assert_allclose(np.asarray(exported(**batch)), with_adapters, atol=1e-5)
