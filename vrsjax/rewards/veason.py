"""Veason-R1 rewards (EasyR1 `video_match_keyframe_sft_sam_mod`): format + keyframe + spatial + consistency.

The policy answers `<answer>{"keyframe_timestamp": t, "bbox_2d_list": [[x1, y1, x2, y2], ...]}</answer>`
for N sampled frames. Format (0..2) checks the tags and the JSON; keyframe (0..1) is the GT mask area of
the answered frame over the largest GT mask area among the sampled frames; spatial (0..1) is the
Hungarian-matched +1-pixel box IoU on that frame, summed over max(M, N); consistency (0..1) is the mean
mask IoU of a propagation of the matched boxes from the keyframe. Everything is pure Python/numpy: the
SAM2 propagation comes in as a callable. The quirks of the original (SitongGong/Veason-R1,
`verl/utils/reward_score/video_match_keyframe_sam_sft_mod.py`) are kept; a broken answer scores 0 on the
terms it breaks and no function raises on any response string.
"""

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrsjax.rewards.boxes import MAX_OBJECTS, answer_json, capped_array, hungarian, iou_matrix, thinking_format_reward

logger = logging.getLogger(__name__)

# The format term wants a JSON *object* right inside the tags; the other terms take whatever is inside.
ANSWER_OBJECT_PATTERN = re.compile(r"<answer>\s*(\{.*?\})\s*</answer>", re.DOTALL)

Propagate = Callable[[int, np.ndarray], Any]
"""propagate(keyframe_position, boxes float[K, 4]) -> bool[T, H, W] masks over the sampled frames."""


@dataclass(frozen=True)
class SpatialMatch:
    """The keyframe box matching behind the spatial and consistency terms.

    position: index of the answered keyframe among the sampled frames.
    reward: sum of matched IoUs / max(M, N), in [0, 1].
    boxes: the matched predicted boxes, [K, 4], in answer order (the order SAM2 receives them).
    """

    position: int
    reward: float
    boxes: np.ndarray


def box_format_reward(response: str) -> float:
    """0..1: given an int `keyframe_timestamp` (a bool passes, a float or string does not) and a list
    `bbox_2d_list` of length n, each element that is a list of 4 ints/floats adds 1/n; [] scores 0."""
    match = ANSWER_OBJECT_PATTERN.search(response) if isinstance(response, str) else None
    if match is None:
        return 0.0
    try:
        data = json.loads(match.group(1))
    except Exception:
        return 0.0
    if not (
        isinstance(data, dict)
        and isinstance(data.get("keyframe_timestamp"), int)
        and isinstance(data.get("bbox_2d_list"), list)
    ):
        return 0.0
    boxes = data["bbox_2d_list"]
    n = len(boxes) or 1
    reward = 0.0
    for box in boxes:
        if isinstance(box, list | tuple) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
            reward += 1.0 / n
    return reward


def format_reward(response: str) -> float:
    """0..2: `thinking_format_reward` (tags, DOTALL fullmatch) + `box_format_reward` (the JSON answer)."""
    return thinking_format_reward(response) + box_format_reward(response)


def parse_keyframe(response: str) -> int | None:
    """The answered keyframe timestamp as the original reads it: `int(answer.get("keyframe_timestamp", -1))`.

    So 3.9 -> 3, "7" -> 7, " 7 " -> 7, true -> 1, a missing key -> -1; None when there is no answer block,
    the JSON is broken, the answer is not a dict, or int() fails ("3.0", null, a list, nan).
    """
    try:
        return _answer_keyframe(answer_json(response))
    except Exception:
        return None


def _answer_keyframe(answer: Any) -> int:
    return int(answer.get("keyframe_timestamp", -1))


def parse_boxes(response: str) -> list[Any] | None:
    """The answer's `bbox_2d_list` as the original iterates it (first 120 items, elements unchecked); None when
    missing or not iterable. A string gives its characters and a dict its keys, which later fail to match."""
    try:
        return list(answer_json(response)["bbox_2d_list"])[:MAX_OBJECTS]
    except Exception:
        return None


def parse_answer(response: str) -> tuple[int | None, list[Any] | None]:
    """(`parse_keyframe`, `parse_boxes`): the answered keyframe timestamp and raw box list, None where unreadable."""
    return parse_keyframe(response), parse_boxes(response)


def keyframe_position(timestamp: int | None, frame_ids: Sequence[int]) -> int | None:
    """Index of `timestamp` among the sampled `frame_ids` (first occurrence), None when it was not sampled."""
    ids = list(frame_ids)
    return ids.index(timestamp) if timestamp is not None and timestamp in ids else None


def keyframe_reward(response: str, gt_masks: np.ndarray, frame_ids: Sequence[int]) -> float:
    """0..1: area(G[k]) / max_t area(G[t]) for the answered keyframe k, 0 if k was not sampled or all G are empty.

    gt_masks: bool or 0/1 [T, H, W] over the sampled frames; frame_ids: int[T] sampled frame indices.
    """
    try:
        masks = np.asarray(gt_masks) > 0
        if masks.ndim != 3 or not masks.any():
            return 0.0
        position = keyframe_position(parse_keyframe(response), frame_ids)
        if position is None:
            return 0.0
        return float(masks[position].sum() / masks.sum(axis=(1, 2)).max())
    except Exception:
        return 0.0


def match_boxes(response: str, gt_boxes: Sequence[Sequence[Any]], frame_ids: Sequence[int]) -> SpatialMatch | None:
    """Hungarian matching of the answered boxes to the GT boxes of the answered keyframe on cost 1 - IoU.

    gt_boxes[i]: the [x1, y1, x2, y2] GT boxes at sampled position i. None when the keyframe was not sampled
    or any step fails (no answer, broken JSON, missing or malformed `bbox_2d_list`, nan IoUs), as the original
    then scores spatial and consistency 0. At most 120 boxes each side.
    """
    try:
        answer = answer_json(response)
        position = keyframe_position(_answer_keyframe(answer), frame_ids)
        if position is None:
            return None
        gt = capped_array(gt_boxes[position])
        pred = capped_array(answer["bbox_2d_list"])
        cost = 1.0 - iou_matrix(pred, gt).astype(float)
        rows, _, total = hungarian(cost, best=1.0)
        return SpatialMatch(position, float(total / max(len(pred), len(gt))), pred[rows])
    except Exception:
        return None


def spatial_reward(response: str, gt_boxes: Sequence[Sequence[Any]], frame_ids: Sequence[int]) -> float:
    """0..1: sum of Hungarian-matched +1-pixel IoUs on the answered keyframe / max(M, N); see `match_boxes`."""
    match = match_boxes(response, gt_boxes, frame_ids)
    return 0.0 if match is None else match.reward


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """bool[H, W], bool[H, W] -> |P and G| / |P or G|, 1.0 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def consistency_reward(pred_masks: np.ndarray, gt_masks: np.ndarray) -> float:
    """0..1: sum over zip(pred, gt) frames of `mask_iou` / len(pred_masks); 0 when pred is empty or shapes clash.

    pred_masks, gt_masks: bool or 0/1 [T, H, W] over the sampled frames (extra frames on either side are
    ignored by the zip but a shorter gt still divides by len(pred_masks), as in the original).
    """
    try:
        total = 0.0
        for pred, gt in zip(pred_masks, gt_masks, strict=False):
            total += mask_iou(pred, gt)
        return float(total / len(pred_masks))
    except Exception:
        return 0.0


def propagated_consistency(match: SpatialMatch | None, propagate: Propagate | None, gt_masks: np.ndarray) -> float:
    """0..1: `consistency_reward` of `propagate(match.position, match.boxes)`; 0 without a match, without a
    propagate callable, with no matched box, or when propagation fails (the original's SAM2 call swallowed
    its errors and scored 0)."""
    if match is None or propagate is None or len(match.boxes) == 0:
        return 0.0
    try:
        masks = propagate(match.position, match.boxes.astype(np.float64))
    except Exception as error:  # a failed SAM2 call must cost this sample its term, not the whole batch
        logger.warning("propagation from keyframe position %d failed: %r", match.position, error)
        return 0.0
    return 0.0 if masks is None else consistency_reward(masks, gt_masks)


def score_components(
    response: str,
    gt_masks: np.ndarray,
    gt_boxes: Sequence[Sequence[Any]],
    frame_ids: Sequence[int],
    propagate: Propagate | None = None,
    *,
    use_consistency: bool = True,
) -> dict[str, float]:
    """The four unweighted terms {format, keyframe, spatial, consistency}; shapes as in `score`.

    `propagate` is called only when use_consistency is true and the boxes matched.
    """
    match = match_boxes(response, gt_boxes, frame_ids)
    return {
        "format": format_reward(response),
        "keyframe": keyframe_reward(response, gt_masks, frame_ids),
        "spatial": 0.0 if match is None else match.reward,
        "consistency": propagated_consistency(match, propagate if use_consistency else None, gt_masks),
    }


def score(
    response: str,
    gt_masks: np.ndarray,
    gt_boxes: Sequence[Sequence[Any]],
    frame_ids: Sequence[int],
    propagate: Propagate | None = None,
    *,
    format_weight: float = 1.0,
    keyframe_weight: float = 1.0,
    spatial_weight: float = 1.0,
    consistency_weight: float = 1.0,
) -> float:
    """Weighted format + keyframe + spatial + consistency; 0..5 with the default unit weights.

    gt_masks: bool[T, H, W] GT masks over the sampled frames; gt_boxes[i]: GT boxes [x1, y1, x2, y2] at
    sampled position i; frame_ids: int[T] sampled frame indices; propagate: the SAM2 propagation (see
    `Propagate`), not called when consistency_weight is 0. The original's ablations are weights of 0:
    no keyframe term (`ablation_no_keyframe_reward`), no SAM2 term
    (`ablation_keyframe_sft_sam_mod_compute_score`), SAM2 without the box IoU term
    (`ablation_keyframe_sft_only_sam`).
    """
    terms = score_components(
        response, gt_masks, gt_boxes, frame_ids, propagate, use_consistency=consistency_weight != 0
    )
    weights = {
        "format": format_weight,
        "keyframe": keyframe_weight,
        "spatial": spatial_weight,
        "consistency": consistency_weight,
    }
    return float(sum(weights[name] * value for name, value in terms.items()))


def gt_boxes_from_solution(solution: str) -> list[list[list[float]]]:
    """The original dataset's `solution` JSON ({"<position>": [{"bbox_2d": [...]}, ...]}) -> gt_boxes per position."""
    per_position = json.loads(solution)
    return [[obj["bbox_2d"] for obj in per_position[str(i)]] for i in range(len(per_position))]
