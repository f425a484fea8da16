"""`vrsjax demo --quick` produces every artifact of the full demo (the learning check itself is `make demo`), and
the demo's SFT conversations tokenize exactly like the GRPO prompts the policy is then trained on."""

import json

import numpy as np
import pytest

from vrsjax import demo
from vrsjax.data.synthetic import write_dataset
from vrsjax.demo.measure import keyframe_box_iou, paired_gain
from vrsjax.demo.world import build_samples, conversation, scene, write_checkpoint
from vrsjax.processing import Processor
from vrsjax.processing.prompts import veason_prompt
from vrsjax.sft.data import encode_conversation


def test_sft_conversations_share_the_grpo_prompt_tokens(tmp_path):
    write_dataset(tmp_path / "data", 4, 0, num_frames=(6, 7), sft=False)
    train = build_samples(tmp_path / "data", "train", 4, 112, 0, whole_video=False)
    ckpt = write_checkpoint(tmp_path / "ckpt", train, bpe_size=600, seed=0, hidden_size=64, text_layers=1)
    proc = Processor.from_pretrained(ckpt)
    for d in train[:3]:
        ex = encode_conversation(proc, conversation(d), list(d.sample.frames))
        prompt = proc(text=[veason_prompt(d.sample.expression, d.sample.frame_ids)], images=list(d.sample.frames))
        ids = prompt["input_ids"][0]
        np.testing.assert_array_equal(ex.input_ids[: len(ids)], ids)
        assert not ex.response_mask[: len(ids)].any() and ex.response_mask[len(ids) :].all()
        answer = proc.tokenizer.decode(ex.input_ids[ex.response_mask].tolist())
        assert answer.startswith("<think>") and '"keyframe_timestamp": ' in answer and answer.endswith("<|im_end|>\n")


SUMMARY_KEYS = [
    "passed", "seed", "cores", "wall_s", "jf_before_sft", "jf_after_sft", "jf_after_grpo", "box_iou_before_sft",
    "box_iou_after_sft", "box_iou_after_grpo", "format_after_grpo", "reward_gain", "reward_gain_se", "spatial_gain",
    "spatial_gain_se",
]  # fmt: skip


def test_demo_scenes_name_one_object_per_expression(tmp_path):
    data = write_dataset(tmp_path / "data", 8, 0, num_frames=(6, 7), sft=False, scene=scene)
    for video in data.videos.values():
        assert 2 <= len(video.shapes) <= 3
        assert len({s.color for s in video.shapes}) == len({s.shape for s in video.shapes}) == len(video.shapes)
        for exp in video.expressions.values():
            assert len(exp["obj_id"]) <= 1  # names are unique: no group expressions


def test_keyframe_box_iou_matches_each_target_with_its_best_box():
    gt = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [-1, -1, -1, -1]])  # the third target is absent
    assert keyframe_box_iou([[0, 0, 9, 9]], gt) == 0.5  # one of the two present targets found exactly
    assert keyframe_box_iou([[29, 29, 20, 20], [0, 0, 9, 4]], gt) == 0.75  # corners in any order
    assert keyframe_box_iou([[0, 0, 9, 9]], gt[2:]) == 0.0


def test_paired_gain_needs_two_standard_errors():
    assert paired_gain([0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5])["ok"]  # the same +0.1 everywhere: se 0
    noisy = paired_gain([0.0, 0.0, 0.0, 0.0], [0.4, -0.3, 0.5, -0.4])
    assert noisy["diff"] > 0 and not noisy["ok"]


@pytest.mark.slow
def test_quick_demo_writes_every_artifact(tmp_path):
    result = demo.run(tmp_path / "out", quick=True)
    out = result["out"]
    assert result["passed"] is None  # quick mode: no learning check
    phases = [json.loads(line)["phase"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    for phase in ("eval/before_sft", "eval/after_sft", "eval/after_grpo", "sft", "sft/format_check", "grpo"):
        assert phase in phases, phase
    report = (out / "report.md").read_text()
    for row in ("| before SFT | colour_track |", "| after SFT | colour_track |", "| after GRPO | colour_track |"):
        assert row in report
    assert "random weights" in report and "Learning check" in report and "standard error" in report
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == SUMMARY_KEYS and summary["passed"] is None and summary["seed"] == 0
    assert 0 <= summary["box_iou_after_grpo"] <= 1 and 0 <= summary["jf_after_grpo"] <= 100
    assert (out / "overlay.png").read_bytes()[:4] == b"\x89PNG"
    for component in ("format", "keyframe", "spatial", "consistency", "score"):
        assert (out / f"reward_{component}.png").stat().st_size > 5_000, component
    assert (out / "grpo" / "curves.png").exists() and (out / "sft" / "sft_curves.png").exists()
    gifs = sorted((out / "gifs").glob("*.gif"))
    assert gifs and all(g.read_bytes()[:6] == b"GIF89a" for g in gifs)
    for phase in ("before_sft", "after_sft", "after_grpo"):
        records = json.loads((out / f"eval_{phase}.json").read_text())["records"]
        assert records and all(0 <= r["colour_track"]["J&F"] <= 100 for r in records)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    from vrsjax.errors import UserError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        demo.run(tmp_path, quick=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
