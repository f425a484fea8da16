"""Training and evaluation examples: the dict a pipeline yields per expression, assembled from an ExpressionSample
(decoding straight from the dataset files) or from a TFDS record (decoding only the sampled frames). Both paths
call `assemble` with the same inputs, so they produce identical examples for the same random draw.

An example holds numpy arrays and plain Python values only (it crosses process boundaries in grain workers):
  dataset, video, exp_id, expression: str; type_id: int (-1 when the format has none)
  frame_ids: int32[N] sampled frame indices; keyframe: int (-1 at inference)
  frames: uint8[N, S, S, 3] (PIL bilinear); gt_masks: uint8[N, S, S] union masks (torch nearest)
  gt_boxes: per sampled frame, the [x1, y1, x2, y2] boxes in S x S (Veason-R1); solution: the same as the JSON string
  height, width: the original frame size; num_video_frames: T
  targets (tasks "vision_reasoner", "videoseg"): per object {"bbox_2d", "point_2d"[, "negative_point_2d"]} at the
  keyframe, in the target_size space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vrsjax.data import transforms as T
from vrsjax.data.masks import combine
from vrsjax.data.samples import ExpressionSample

TASKS = ("veason", "vision_reasoner", "videoseg")


def assemble(
    meta: dict[str, Any],
    frame_ids: Sequence[int],
    keyframe: int,
    frames: np.ndarray,
    object_masks: np.ndarray | None,
    size: int,
    task: str = "veason",
    target_size: int = T.VISION_REASONER_SIZE,
) -> dict[str, Any]:
    """The example dict. meta: dataset, video, exp_id, expression, type_id, height, width, num_video_frames;
    frames: uint8[N, S, S, 3] already resized; object_masks: uint8[N, K, H, W] at frame_ids (None without GT)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    example = {**meta, "frame_ids": np.asarray(frame_ids, np.int32), "keyframe": int(keyframe), "frames": frames}
    if object_masks is None:
        return example
    boxes = T.veason_gt_boxes(T.object_extents(object_masks), meta["width"], meta["height"], size)
    example["gt_masks"] = T.resize_masks_nearest(combine(object_masks), size)
    example["gt_boxes"] = boxes
    example["solution"] = T.veason_solution(boxes)
    if task != "veason" and keyframe >= 0:
        at_key = object_masks[list(frame_ids).index(keyframe)]
        targets = T.videoseg_targets if task == "videoseg" else T.vision_reasoner_targets
        example["targets"] = targets(at_key, target_size)
    return example


def sample_meta(sample: ExpressionSample) -> dict[str, Any]:
    return {
        "dataset": sample.dataset,
        "video": sample.video,
        "exp_id": sample.exp_id,
        "expression": sample.expression,
        "type_id": -1 if sample.type_id is None else int(sample.type_id),
        "height": int(sample.height),
        "width": int(sample.width),
        "num_video_frames": sample.num_frames,
    }


def train_example(
    sample: ExpressionSample,
    rng: T.Rng | None,
    num_frames: int = 6,
    size: int = T.VEASON_SIZE,
    task: str = "veason",
    target_size: int = T.VISION_REASONER_SIZE,
    keyframe: int | None = None,
) -> dict[str, Any]:
    """Veason-R1 training sampling straight from the files (what the reference loader does per sample: decode every
    frame's masks for the areas, pick the keyframe, stride-sample, read and resize the sampled frames).

    keyframe: use this keyframe instead of drawing one with rng (to rebuild an example a pipeline produced).
    """
    object_masks = sample.object_masks()
    if keyframe is None:
        frame_ids, keyframe = T.veason_train_frame_ids(T.union_areas(combine(object_masks)), num_frames, rng)
    else:
        frame_ids = T.stride_frame_ids(sample.num_frames, num_frames, keyframe)
    frames = sample.read_frames(frame_ids, size)
    return assemble(sample_meta(sample), frame_ids, keyframe, frames, object_masks[frame_ids], size, task, target_size)


def inference_example(sample: ExpressionSample, num_frames: int = 8, size: int = T.VEASON_SIZE) -> dict[str, Any]:
    """Veason-R1 inference sampling (uniform, no keyframe); GT masks and boxes when the split has them."""
    frame_ids = T.inference_frame_ids(sample.num_frames, num_frames)
    masks = sample.object_masks(frame_ids) if sample.has_masks else None
    return assemble(sample_meta(sample), frame_ids, -1, sample.read_frames(frame_ids, size), masks, size)


def image_example(sample: ExpressionSample, size: int = T.VISION_REASONER_SIZE) -> dict[str, Any]:
    """A one-frame sample for VisionReasoner: the image at size x size and targets from its masks (or its
    "solution" when it has no masks)."""
    example = assemble(
        sample_meta(sample),
        [0],
        0,
        sample.read_frames([0], size),
        sample.object_masks([0]) if sample.has_masks else None,
        size,
        "vision_reasoner",
        size,
    )
    if "targets" not in example and sample.extra.get("solution") is not None:
        example["targets"] = list(sample.extra["solution"])
    return example
