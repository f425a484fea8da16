"""VisionReasoner / Seg-Zero rewards (EasyR1 `vision_reasoner`): format + accuracy + non-repeat (0..7).

The policy answers a JSON list `<answer>[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]</answer>`.
Format (0..3) is 1 for the tags plus up to 2 for the list items; accuracy (0..3) counts, per
Hungarian-matched prediction/target pair, an IoU hit, a box-L1 hit and a point hit, summed over
max(M, N); non-repeat (0/1) penalises repeated sentences. Behaviour follows dvlab-research/Seg-Zero
`verl/utils/reward_score/vision_reasoner.py` exactly, quirks included (a failing item stops the format
sum but keeps what was summed, 120 objects each side). VideoSeg-R1 reuses these terms (`videoseg`).
"""

import json
from typing import Any

import numpy as np

from vrsjax.rewards.boxes import answer_json, capped_array, hungarian, iou_matrix, thinking_format_reward

IOU_THRESHOLD = 0.5  # IoU (+1 convention) strictly above
BOX_L1_THRESHOLD = 10.0  # mean |box difference| in pixels strictly below
POINT_THRESHOLD = 30.0  # Euclidean point distance in pixels strictly below


def item_format_reward(item: Any) -> float:
    """0..2 for one answer item: +1 if `bbox_2d` is a list of 4, +1 if `point_2d` is a list of 2 (values unchecked).

    Raises (TypeError) for a non-dict item that contains a key name (a string like "xbbox_2d", a list holding
    "point_2d"), as the original's `item[key]` does.
    """
    reward = 0.0
    if "bbox_2d" in item and isinstance(item["bbox_2d"], list) and len(item["bbox_2d"]) == 4:
        reward += 1.0
    if "point_2d" in item and isinstance(item["point_2d"], list) and len(item["point_2d"]) == 2:
        reward += 1.0
    return reward


def answer_format_reward(response: str) -> float:
    """0..2: sum over the items of the answer JSON of `item_format_reward(item) / len(answer)`.

    The answer may be any JSON (a dict iterates its keys, a string its characters); an item that raises stops
    the sum but keeps what was added before it, as in the original.
    """
    reward = 0.0
    try:
        answer = answer_json(response)
        count = len(answer)
        for item in answer:
            reward += item_format_reward(item) / count
    except Exception:
        pass
    return reward


def format_reward(response: str) -> float:
    """0..3: `thinking_format_reward` (tags, DOTALL fullmatch) + `answer_format_reward`."""
    return thinking_format_reward(response) + answer_format_reward(response)


def hit_matrix(
    pred_boxes: np.ndarray,
    pred_points: np.ndarray,
    gt_boxes: np.ndarray,
    gt_points: np.ndarray,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    box_l1_threshold: float = BOX_L1_THRESHOLD,
    point_threshold: float = POINT_THRESHOLD,
) -> np.ndarray:
    """float[M, 4], float[M, 2], float[N, 4], float[N, 2] -> float[M, N] in {0, 1, 2, 3}: the hits per pair.

    IoU > 0.5 (nan counts as a miss); mean |box diff| < 10; point distance < 30 and the predicted point
    inside its own predicted box (edges included).
    """
    with np.errstate(all="ignore"):
        iou = iou_matrix(pred_boxes, gt_boxes)
        box_l1 = np.mean(np.abs(pred_boxes[:, np.newaxis, :] - gt_boxes[np.newaxis, :, :]), axis=2)
        distance = np.sqrt(np.sum((pred_points[:, np.newaxis, :] - gt_points[np.newaxis, :, :]) ** 2, axis=2))
    inside_x = (pred_points[:, 0] >= pred_boxes[:, 0]) & (pred_points[:, 0] <= pred_boxes[:, 2])
    inside_y = (pred_points[:, 1] >= pred_boxes[:, 1]) & (pred_points[:, 1] <= pred_boxes[:, 3])
    iou_hit = (iou > iou_threshold).astype(float)
    box_hit = (box_l1 < box_l1_threshold).astype(float)
    point_hit = ((distance < point_threshold) & (inside_x & inside_y)[:, np.newaxis]).astype(float)
    return iou_hit + box_hit + point_hit


def accuracy_reward(response: str, gt_objects: list[dict[str, Any]] | str, **thresholds: float) -> float:
    """0..3: Hungarian matching on 3 - hits, sum of matched hits / max(M, N); 0 when anything fails.

    gt_objects: [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...] or its JSON string; each side is
    capped at 120 objects. thresholds: overrides for `hit_matrix` (defaults are the original's).
    """
    try:
        gt = json.loads(gt_objects) if isinstance(gt_objects, str) else gt_objects
        gt_boxes = [obj["bbox_2d"] for obj in gt]
        gt_points = [obj["point_2d"] for obj in gt]
        answer = answer_json(response)
        pred_boxes = [obj["bbox_2d"] for obj in answer]
        pred_points = [obj["point_2d"] for obj in answer]
        pred_boxes, pred_points = capped_array(pred_boxes), capped_array(pred_points)
        gt_boxes, gt_points = capped_array(gt_boxes), capped_array(gt_points)
        cost = 3.0 - hit_matrix(pred_boxes, pred_points, gt_boxes, gt_points, **thresholds)
        _, _, total = hungarian(cost, best=3.0)
        return float(total / max(len(pred_boxes), len(gt_boxes)))
    except Exception:
        return 0.0


def non_repeat_reward(response: str) -> float:
    """1.0 unless the response repeats sentences: split on '.', strip, drop empties; 0.0 at the second repeat."""
    if not isinstance(response, str):
        return 1.0
    seen: set[str] = set()
    repeats = 0
    for sentence in (part.strip() for part in response.split(".")):
        if not sentence:
            continue
        repeats += sentence in seen
        if repeats >= 2:
            return 0.0
        seen.add(sentence)
    return 1.0


def score(
    response: str,
    gt_objects: list[dict[str, Any]] | str,
    *,
    format_weight: float = 1.0,
    accuracy_weight: float = 1.0,
    non_repeat_weight: float = 1.0,
) -> float:
    """Weighted format + accuracy + non-repeat; 0..7 with the default unit weights (gt_objects as in accuracy)."""
    return float(
        format_weight * format_reward(response)
        + accuracy_weight * accuracy_reward(response, gt_objects)
        + non_repeat_weight * non_repeat_reward(response)
    )
