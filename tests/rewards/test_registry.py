"""Reward registry: EasyR1 names resolve, config binds as keywords, and vrsjax.rewards stays free of JAX and torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vrsjax.rewards import registry, veason, vision_reasoner

FRAME_IDS = [0, 5, 10]
MASKS = np.zeros((3, 8, 8), dtype=bool)
MASKS[1, :4, :4] = True
MASKS[2, :2, :2] = True
GT_BOXES = [[[0, 0, 0, 0]], [[0, 0, 3, 3]], [[0, 0, 1, 1]]]
RESPONSE = '<think>x</think><answer>{"keyframe_timestamp": 5, "bbox_2d_list": [[0, 0, 3, 3]]}</answer>'


class Propagate:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, position: int, boxes: np.ndarray) -> np.ndarray:
        self.calls += 1
        return MASKS


def test_builtin_names() -> None:
    assert {
        "video_match_keyframe_sft_sam_mod",
        "ablation_keyframe_sft_sam_mod_compute_score",
        "ablation_no_keyframe_reward",
        "ablation_keyframe_sft_only_sam",
        "vision_reasoner",
        "videoseg_r1",
    } <= set(registry.names())


@pytest.mark.parametrize(
    ("name", "expected", "calls"),
    [
        ("video_match_keyframe_sft_sam_mod", 2 + 1 + 1 + 1, 1),
        ("ablation_keyframe_sft_sam_mod_compute_score", 2 + 1 + 1, 0),  # no SAM2 term, no SAM2 call
        ("ablation_no_keyframe_reward", 2 + 1 + 1, 1),
        ("ablation_keyframe_sft_only_sam", 2 + 1 + 1, 1),  # SAM2 term without the box IoU term
    ],
)
def test_veason_names_and_ablations(name: str, expected: float, calls: int) -> None:
    propagate = Propagate()
    assert registry.lookup(name)(RESPONSE, MASKS, GT_BOXES, FRAME_IDS, propagate) == pytest.approx(expected)
    assert propagate.calls == calls


def test_lookup_binds_config_and_overrides() -> None:
    assert registry.config("ablation_no_keyframe_reward") == {"keyframe_weight": 0.0}
    assert registry.config("video_match_keyframe_sft_sam_mod") == {}
    heavy = registry.lookup("video_match_keyframe_sft_sam_mod", spatial_weight=2.0)
    assert heavy(RESPONSE, MASKS, GT_BOXES, FRAME_IDS, Propagate()) == pytest.approx(6.0)
    gt = [{"bbox_2d": [0, 0, 10, 10], "point_2d": [5, 5]}]
    response = f"<think>x</think><answer>{json.dumps(gt)}</answer>"
    assert registry.lookup("vision_reasoner")(response, gt) == vision_reasoner.score(response, gt) == 7.0
    assert registry.lookup("vision_reasoner", accuracy_weight=2.0)(response, gt) == 10.0


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="video_match_keyframe_sft_sam_mod"):
        registry.lookup("no_such_reward")


def test_register_and_unregister() -> None:
    registry.register("test_only_veason_no_format", veason.score, format_weight=0.0)
    try:
        assert registry.lookup("test_only_veason_no_format")(RESPONSE, MASKS, GT_BOXES, FRAME_IDS) == 2.0
        with pytest.raises(ValueError, match="already registered"):
            registry.register("test_only_veason_no_format", veason.score)
    finally:
        registry.unregister("test_only_veason_no_format")
    assert "test_only_veason_no_format" not in registry.names()


def test_rewards_import_neither_jax_nor_torch() -> None:
    code = "import sys, vrsjax.rewards; print(sorted(m for m in ('jax', 'torch', 'flax') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
