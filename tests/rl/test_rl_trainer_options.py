"""EasyR1's step options in the trainer on the tiny model: online filtering (groups dropped and more prompts rolled
out, counted), KL in the reward with the adaptive controller, old log-probs from the rollout (which equal the
recomputed ones), TensorBoard + JSONL logs with the MFU estimate, and a grain iterator's state in the checkpoint."""

import json

import numpy as np
import pytest
from test_rl_trainer import make_trainer, synthetic_samples

from vrsjax.processing import Processor
from vrsjax.rl.sequences import prompt_data
from vrsjax.rl.tensorboard import read_scalars
from vrsjax.testing import write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("options") / "tiny", seed=0)
    return path, Processor.from_pretrained(path)


pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


@pytest.mark.slow
def test_filtering_kl_in_reward_rollout_log_probs_and_logs(tiny, tmp_path):
    options = {
        "algorithm.online_filtering": "true",
        "algorithm.filter_key": "format",
        "worker.actor.use_kl_loss": "false",
        "algorithm.kl_coef": 0.05,
        "algorithm.kl_type": "adaptive",
        "algorithm.kl_target": 0.01,
        "algorithm.kl_horizon": 100,
        "worker.actor.use_rollout_log_probs": "true",
        "trainer.logger": "[console,tensorboard]",
        "trainer.max_steps": 1,
    }
    trainer = make_trainer(tiny, tmp_path, **options)
    trainer.peak_flops = 1e12
    scored: list[tuple[str, float]] = []

    def reward(response, sample):  # sample s0's group always scores 0: outside (0.01, 0.99), so it is dropped
        value = 0.0 if sample.sample_id == "s0" else 0.1 + (len(response) % 7) / 10
        scored.append((sample.sample_id, value))
        return {"format": value}

    trainer.reward_fn = reward
    assert trainer.ref_params is not None and trainer.kl_ctrl is not None  # the reference serves the reward's KL

    # the rollout's log-probs are the ones the trainer would recompute (same temperature, whole vocabulary)
    samples = synthetic_samples()[:2]
    out = trainer._rollout(samples)
    trainer.rollouts = 0
    prompts = [
        prompt_data(trainer.model.config, trainer.processor(text=[trainer._prompt_text(s)], images=list(s.frames)))
        for s in samples
    ]
    recomputed = trainer._log_probs(trainer.params, prompts, np.repeat([0, 1], 4), out, 8)
    valid = out.mask > 0
    assert np.abs(recomputed - out.logprobs)[valid].max() <= 1e-5

    (m,) = trainer.train(1)
    # online filtering: prompts come in pairs in the data order; s0's pair is rolled out, s0 dropped, more drawn
    order = [f"s{i}" for i in np.random.default_rng([0, 0]).permutation(4)]
    pairs = [order[i : i + 2] for i in range(0, 4, 2)]
    tries = 1 if "s0" not in pairs[0] else 2
    assert m["filter/tries"] == tries and m["filter/dropped_groups"] == sum("s0" in p for p in pairs[:tries])
    kept = [v for sid, v in scored if sid != "s0"][:8]
    assert m["reward/format_mean"] == pytest.approx(np.mean(kept), abs=1e-6)
    # KL in the reward: EasyR1's metrics and the adaptive controller's update over the 8 responses
    assert m["actor/kl_coef"] == 0.05 and "actor/kl_loss" not in m
    error = np.clip(m["actor/kl_penalty"] / 0.01 - 1, -0.2, 0.2)
    assert trainer.kl_ctrl.kl_coef == pytest.approx(0.05 * (1 + error * 8 / 100), rel=1e-9)
    # logs: JSONL and TensorBoard carry the same numbers, with the MFU estimate at the given peak
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["perf/mfu"] == m["perf/mfu"]
    assert m["perf/mfu"] == pytest.approx(m["perf/tflops_step"] / (m["time/step"] * 8), rel=1e-9)
    ((step, scalars),) = read_scalars(next((tmp_path / "tensorboard").glob("events.out.tfevents.*")))
    assert step == 1 and scalars["perf/mfu"] == pytest.approx(m["perf/mfu"], rel=1e-6)
    assert {"time/rollout", "time/reward", "time/log_probs", "time/update", "perf/tokens_per_s"} <= set(scalars)
    trainer.close()


def test_grain_iterator_state_is_checkpointed(tiny, tmp_path):
    from vrsjax.data import open_dataset
    from vrsjax.data.pipeline import train_dataset
    from vrsjax.data.records import build_records
    from vrsjax.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", 3, 0)
    records = build_records(open_dataset(None, str(tmp_path / "data"), "train"), tmp_path / "records")

    def trainer(run):
        data = iter(train_dataset(records, batch_size=2, seed=5, num_frames=3, size=56))
        return make_trainer(tiny, tmp_path / run, samples=data)

    straight = trainer("a")
    want = [[s.sample_id for s in straight._next_prompts()] for _ in range(3)]
    first = trainer("b")
    assert [s.sample_id for s in first._next_prompts()] == want[0]
    first.save()
    resumed = trainer("b")
    assert resumed.restore() and resumed.data_position == 2
    assert [[s.sample_id for s in resumed._next_prompts()] for _ in range(2)] == want[1:]
    first.close()
    resumed.close()


def test_reward_scorer_scores_in_the_background(tiny, tmp_path):
    """With a RewardScorer the step submits each group and collects totals later: the registered reward's values."""
    from vrsjax.rewards import veason
    from vrsjax.rewards.scorer import RewardScorer

    samples = synthetic_samples()[:2]
    good = '<think>x</think>\n<answer>{"keyframe_timestamp": 5, "bbox_2d_list": [[100, 100, 260, 250]]}</answer>'
    texts = [good, "no answer", good.replace("5", "7"), good] * 2
    with RewardScorer(sam2=None) as scorer:
        trainer = make_trainer(tiny, tmp_path, scorer=scorer)
        parts, seconds = trainer._submit(texts, samples).result(timeout=60)
    want = [
        veason.score(t, s.gt_masks, s.gt_boxes, s.frame_ids)
        for t, s in zip(texts, [samples[0]] * 4 + [samples[1]] * 4, strict=True)
    ]
    assert [p["overall"] for p in parts] == pytest.approx(want, abs=1e-6) and seconds >= 0
    trainer.close()


def test_reference_dtype_follows_easyr1(tiny, tmp_path):
    """worker.actor.fsdp.torch_dtype unset: float32 actor, bfloat16 reference (EasyR1); set: both in that dtype."""
    import jax
    import jax.numpy as jnp

    default = make_trainer(tiny, tmp_path / "a", **{"worker.actor.fsdp.torch_dtype": "null"})
    assert {x.dtype for x in jax.tree.leaves(default.ref_params)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(default.params)} == {jnp.dtype(jnp.float32)}
    pinned = make_trainer(tiny, tmp_path / "b")  # the demo recipe pins float32
    assert {x.dtype for x in jax.tree.leaves(pinned.ref_params)} == {jnp.dtype(jnp.float32)}
