"""Dataset-side transforms as pure numpy functions: which frames a sample shows, and the ground truth at them.

Veason-R1 (`verl/utils/revos_keyframe_sft_dataset_mod.py`, inference in `batch_eval_keyframe_sft_dataset_.py`):
- training: areas[t] = pixels of the union mask > 0; keyframe = random choice among `areas.argsort()[-5:][::-1]`
  (numpy's default, unstable sort, as the original); step = ceil(T / (N - 1)), frames = range(kf % step, T, step)
  (N = 1 gives [kf]); frames resize to 560x560 with PIL bilinear, masks with torch's `F.interpolate(mode=
  "nearest")` (reproduced here in float32 index arithmetic);
- GT boxes per sampled frame: for each object the min/max column/row of `mask == 1`, scaled by 560/W, 560/H, plus
  0.5 (floats); an absent object gives [0, 0, 0, 0]; a frame where no object is present gives one [0, 0, 0, 0];
- inference: `np.linspace(0, T - 1, N, dtype=int)` when T > N, else all frames.
VisionReasoner targets (840x840 space): per present object the box of its extents scaled and rounded,
`int(v * 840 / W + 0.5)`, and the box center. VideoSeg-R1 targets add a negative point just outside the union of
the targets (taxicab distance `margin` when possible, nearest to the positive point). These two recipes publish no
data code: the rounding, centre and negative-point rules are ours and documented as such.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

VEASON_SIZE = 560
VISION_REASONER_SIZE = 840
TOP_AREA_FRAMES = 5
NEGATIVE_POINT_KEY = "negative_point_2d"  # the answer key vrsjax.rewards.videoseg reads
NEGATIVE_POINT_MARGIN = 10  # taxicab pixels outside the mask; the reward accepts 0 < d <= 40

Rng = np.random.Generator | random.Random


def choose_index(rng: Rng, n: int) -> int:
    """A uniform index in [0, n): `random.Random.choice` semantics for a Random, `integers` for a Generator."""
    if isinstance(rng, random.Random):
        return rng.choice(range(n))
    return int(rng.integers(n))


def top_area_frames(areas: np.ndarray, k: int = TOP_AREA_FRAMES) -> np.ndarray:
    """int[T] -> int[min(k, T)]: the frames with the k largest areas, largest first (`argsort()[-k:][::-1]`)."""
    return np.asarray(areas).argsort()[-k:][::-1]


def stride_frame_ids(num_frames: int, num_samples: int, keyframe: int) -> list[int]:
    """Veason-R1's stride sampling through the keyframe: range(kf % step, T, step), step = ceil(T / (N - 1))."""
    if not 0 <= keyframe < num_frames:
        raise ValueError(f"keyframe {keyframe} outside a {num_frames}-frame video")
    if num_samples == 1:
        return [keyframe]
    step = math.ceil(num_frames / (num_samples - 1))
    return list(range(keyframe % step, num_frames, step))


def veason_train_frame_ids(areas: np.ndarray, num_samples: int, rng: Rng) -> tuple[list[int], int]:
    """int[T] union-mask areas -> (sampled frame ids, keyframe), the keyframe drawn among the top-5 area frames."""
    top = top_area_frames(areas)
    keyframe = int(top[choose_index(rng, len(top))])
    return stride_frame_ids(len(areas), num_samples, keyframe), keyframe


def inference_frame_ids(num_frames: int, num_samples: int = 8) -> list[int]:
    """Veason-R1 inference: `linspace(0, T - 1, N, dtype=int)` when T > N, else every frame."""
    if num_frames > num_samples:
        return [int(t) for t in np.linspace(0, num_frames - 1, num=num_samples, dtype=int)]
    return list(range(num_frames))


def union_areas(union_masks: np.ndarray) -> np.ndarray:
    """uint8[T, H, W] -> int64[T]: pixels > 0 per frame."""
    return (np.asarray(union_masks) > 0).sum(axis=(1, 2)).astype(np.int64)


def object_extents(object_masks: np.ndarray) -> np.ndarray:
    """uint8[T, K, H, W] -> int32[T, K, 4] (left, top, right, bottom) of `mask == 1`; -1 where the object is absent."""
    masks = np.asarray(object_masks) == 1
    out = np.full((*masks.shape[:2], 4), -1, np.int32)
    rows_any, cols_any = masks.any(axis=3), masks.any(axis=2)  # [T, K, H], [T, K, W]
    present = rows_any.any(axis=2)
    first = lambda a: a.argmax(axis=2)  # noqa: E731
    last = lambda a: a.shape[2] - 1 - a[:, :, ::-1].argmax(axis=2)  # noqa: E731
    out[..., 0], out[..., 1] = first(cols_any), first(rows_any)
    out[..., 2], out[..., 3] = last(cols_any), last(rows_any)
    out[~present] = -1
    return out


def veason_gt_boxes(extents: np.ndarray, width: int, height: int, size: int = VEASON_SIZE) -> list[list[list[float]]]:
    """int[N, K, 4] extents at the sampled frames -> per frame the list of [x1, y1, x2, y2] in the size x size frame.

    Each coordinate is `v * size / W (or H) + 0.5`; [0, 0, 0, 0] for an absent object, a single [0, 0, 0, 0] for a
    frame without any present object.
    """
    x_factor, y_factor = size / width, size / height
    boxes = []
    for frame in np.asarray(extents):
        if not (frame[:, 0] >= 0).any():
            boxes.append([[0, 0, 0, 0]])
            continue
        boxes.append(
            [
                [0, 0, 0, 0]
                if left < 0
                else [
                    int(left) * x_factor + 0.5,
                    int(top) * y_factor + 0.5,
                    int(right) * x_factor + 0.5,
                    int(bottom) * y_factor + 0.5,
                ]
                for left, top, right, bottom in frame
            ]
        )
    return boxes


def veason_solution(gt_boxes: Sequence[Sequence[Sequence[float]]]) -> str:
    """The original dataset's `solution` string: json.dumps({position: [{"bbox_2d": box}, ...]})."""
    return json.dumps({i: [{"bbox_2d": list(box)} for box in boxes] for i, boxes in enumerate(gt_boxes)})


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """int64[out_size]: source index of each output pixel under torch's `F.interpolate(mode="nearest")`.

    torch computes `min(floor(dst * (float)in / out), in - 1)` in float32 (special-casing equal and doubled sizes);
    the same float32 arithmetic here gives the same indices.
    """
    if out_size == in_size:
        return np.arange(out_size, dtype=np.int64)
    if out_size == 2 * in_size:
        return np.arange(out_size, dtype=np.int64) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def resize_masks_nearest(masks: np.ndarray, size: int) -> np.ndarray:
    """uint8[T, H, W] -> uint8[T, size, size] with torch nearest-neighbour semantics."""
    masks = np.asarray(masks)
    rows, cols = nearest_indices(masks.shape[-2], size), nearest_indices(masks.shape[-1], size)
    return masks[..., rows, :][..., cols]


def scaled_box(extent: Sequence[int], width: int, height: int, size: int = VISION_REASONER_SIZE) -> list[int]:
    """(left, top, right, bottom) in pixels -> [x1, y1, x2, y2] in the size x size space, `int(v * s + 0.5)`."""
    sx, sy = size / width, size / height
    left, top, right, bottom = (int(v) for v in extent)
    return [int(left * sx + 0.5), int(top * sy + 0.5), int(right * sx + 0.5), int(bottom * sy + 0.5)]


def box_center(box: Sequence[int]) -> list[int]:
    """[x1, y1, x2, y2] -> [(x1 + x2) // 2, (y1 + y2) // 2]."""
    return [(int(box[0]) + int(box[2])) // 2, (int(box[1]) + int(box[3])) // 2]


def vision_reasoner_targets(object_masks: np.ndarray, size: int = VISION_REASONER_SIZE) -> list[dict[str, Any]]:
    """uint8[K, H, W] -> [{"bbox_2d": [4], "point_2d": [2]}] for each present object, in the size x size space."""
    masks = np.asarray(object_masks)
    height, width = masks.shape[-2:]
    targets = []
    for extent in object_extents(masks[None])[0]:
        if extent[0] >= 0:
            box = scaled_box(extent, width, height, size)
            targets.append({"bbox_2d": box, "point_2d": box_center(box)})
    return targets


def negative_point(
    union_mask: np.ndarray, near: Sequence[int], margin: int = NEGATIVE_POINT_MARGIN
) -> list[int] | None:
    """bool[S, S] union of the targets -> [x, y] of a background pixel at taxicab distance `margin` from the mask
    (or the largest distance in [1, margin] that exists), the one nearest to `near`; None if the mask fills the image.
    """
    mask = np.asarray(union_mask) > 0
    if not mask.any() or mask.all():
        return None
    distance = ndimage.distance_transform_cdt(~mask, metric="taxicab")
    reachable = distance[(distance >= 1) & (distance <= margin)]
    rows, cols = np.nonzero(distance == reachable.max())
    best = np.argmin((cols - near[0]) ** 2 + (rows - near[1]) ** 2)  # first in row-major order on ties
    return [int(cols[best]), int(rows[best])]


def videoseg_targets(
    object_masks: np.ndarray, size: int = VISION_REASONER_SIZE, margin: int = NEGATIVE_POINT_MARGIN
) -> list[dict[str, Any]]:
    """uint8[K, H, W] at the target frame -> VisionReasoner targets plus `negative_point_2d` per object.

    Negative points are computed on the union mask resized to size x size (torch nearest), so they are outside
    every target at the resolution the reward checks them.
    """
    masks = np.asarray(object_masks)
    targets = vision_reasoner_targets(masks, size)
    union = resize_masks_nearest((masks > 0).any(axis=0, keepdims=True).astype(np.uint8), size)[0]
    for target in targets:
        target[NEGATIVE_POINT_KEY] = negative_point(union, target["point_2d"], margin)
    return targets
