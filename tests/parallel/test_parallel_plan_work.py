"""`vrsjax plan` models what the sharded trainer runs: no replicated rows, a group's responses split over the batch
shards with its prompt on each of their devices (`group_copies`), and the work per device it prints."""

import pytest

from vrsjax.config import load_config
from vrsjax.parallel import plan
from vrsjax.parallel.data import group_copies


@pytest.mark.parametrize(
    "groups, ways, copies", [(1, 8, 8), (2, 8, 4), (8, 8, 1), (16, 8, 1), (2, 16, 8), (4, 32, 8), (3, 8, 8)]
)
def test_group_copies_split_every_micro_batch(groups, ways, copies):
    assert group_copies(groups, 8, ways) == copies
    assert (groups * copies) % ways == 0 and 8 % copies == 0


def test_group_copies_falls_back_when_responses_cannot_split():
    assert group_copies(1, 4, 8) == 1  # 4 responses over 8 shards: the micro-batch itself does not divide


def test_veason_3b_peak_does_not_grow_with_devices_and_32_fit():
    cfg = load_config("configs/veason_r1_3b.yaml")
    peaks, works = [], []
    for devices in (8, 16, 32):
        inputs = plan.inputs_from_config(cfg, devices=devices, model="3b")
        peaks.append(plan.make_plan(inputs, knobs=False).peak)
        works.append(plan.work_per_device(inputs))
        update = works[-1]["update micro-batch"]  # one group's prompt and one response per device
        assert (update["prompt_tokens"], update["response_tokens"]) == (7100, 1024)
    assert peaks[0] >= peaks[1] >= peaks[2]
    assert plan.make_plan(plan.inputs_from_config(cfg, devices=32, model="3b"), knobs=False).fits
    # the rollout's 16 prompts: 2 per device on 8, 1 on 16, on 32 each prompt on 2 devices with 4 responses each
    assert [w["rollout"]["prompt_tokens"] for w in works] == [14200, 7100, 7100]
    assert [w["rollout"]["response_tokens"] for w in works] == [16 * 1024, 8 * 1024, 4 * 1024]
    assert works[0]["step"]["flops"] == pytest.approx(2 * works[1]["step"]["flops"], rel=0.01)


def test_whole_groups_per_device_repeat_no_prompt():
    cfg = load_config(
        "configs/veason_r1_3b.yaml",
        [f"worker.actor.micro_batch_size_per_device_for_{k}=8" for k in ("update", "experience")],
    )
    inputs = plan.inputs_from_config(cfg, devices=8, model="3b")
    assert plan.step_efficiency(inputs) == pytest.approx(1.0)
    one_per_device = plan.inputs_from_config(load_config("configs/veason_r1_3b.yaml"), devices=8, model="3b")
    assert plan.step_efficiency(one_per_device) < 0.5  # each device runs a whole prompt for one response
    text = plan.format_plan(plan.make_plan(inputs, knobs=False))
    assert "work per device" in text and "update micro-batch" in text and "step FLOPs efficiency: 1.00" in text
