"""Test inputs shared by the service tests: a small synthetic video, SAM2 prompts on it, Veason-R1 answers and
their reference scores."""

import json

import numpy as np

from vrsjax.rewards import veason
from vrsjax.rewards.scorer import RewardGroup

FRAMES, HEIGHT, WIDTH = 5, 48, 64
BOXES = np.array([[18, 8, 42, 33], [2, 2, 20, 20]], dtype=np.float64)
SAM2_TEST_OPTIONS = {"config": "hiera_t", "device": "cpu", "image_size": 64, "seed": 3}
"""seed 3 gives random weights whose masks depend visibly on the prompt at input size 64."""


def synthetic_frames(count: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8[T, H, W, 3]: stripes and a bright square that moves down one pixel per frame."""
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(count):
        frame = np.stack([(xx * 4 + t * 10) % 255, (yy * 5) % 255, ((xx + yy) * 3) % 255], -1).astype(np.uint8)
        frame[10 + t : 30 + t, 20:40] = 250
        frames.append(frame)
    return np.stack(frames)


FRAME_IDS = [0, 3, 6, 9, 12]


def answer(keyframe, boxes) -> str:
    return f"<think>...</think>\n<answer>{json.dumps({'keyframe_timestamp': keyframe, 'bbox_2d_list': boxes})}</answer>"


RESPONSES = [
    answer(6, [[18, 8, 42, 33]]),
    answer(0, BOXES.tolist()),
    answer(12, [[20, 14, 39, 33]]),
    answer(5, [[1, 2, 3, 4]]),  # keyframe not sampled: no SAM2
    "no answer at all",
    answer(6, [[18, 8, 42, 33]]),  # a repeat: its masklet is reused
    "<think>a</think><answer>{'keyframe_timestamp': 6}</answer>",  # single quotes: broken JSON
]


def veason_group(responses=RESPONSES) -> RewardGroup:
    gt_masks = np.zeros((FRAMES, HEIGHT, WIDTH), dtype=bool)
    for t in range(FRAMES):
        gt_masks[t, 10 + t : 30 + t, 20:40] = True
    gt_boxes = [[[20, 10 + t, 39, 29 + t]] for t in range(FRAMES)]
    fields = {"gt_masks": gt_masks, "gt_boxes": gt_boxes, "frame_ids": FRAME_IDS}
    return RewardGroup(list(responses), fields, synthetic_frames())


def reference_scores(group, sam2_service=None, fallback_for_matched=None):
    """veason.score per response, SAM2 called directly (or, with fallback_for_matched, the consistency term set)."""
    scores = []
    for response in group.responses:
        if fallback_for_matched is None:
            propagate = lambda p, b, frames=group.frames: sam2_service.propagate(frames, p, b)  # noqa: E731
            scores.append(veason.score(response, **group.fields, propagate=propagate))
        else:
            matched = veason.match_boxes(response, group.fields["gt_boxes"], FRAME_IDS)
            extra = fallback_for_matched if matched is not None and len(matched.boxes) else 0.0
            scores.append(veason.score(response, **group.fields) + extra)
    return np.asarray(scores, dtype=np.float32)
