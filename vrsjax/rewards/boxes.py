"""Answer parsing and box matching shared by the Veason-R1 and VisionReasoner rewards.

Both originals read the JSON inside the first `<answer> ... </answer>` block with `json.loads`, turn box
lists into numpy arrays with `np.array`, score pairs with the +1-pixel box IoU and match predictions to
targets with the Hungarian algorithm, each side capped at 120 objects. These helpers reproduce those
steps operation for operation (including how numpy broadcasts or fails on malformed arrays), so that the
reward modules differ from the originals only in structure. Nothing here catches exceptions: the reward
functions decide what a failure scores.
"""

import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_OBJECTS = 120

# Both originals use these patterns with re.DOTALL: `fullmatch` for the tags, `search` for the answer.
THINK_ANSWER_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def thinking_format_reward(response: str) -> float:
    """1.0 when the whole response is `<think>...</think>` then `<answer>...</answer>` (DOTALL fullmatch), else 0.0."""
    if not isinstance(response, str):
        return 0.0
    return 1.0 if THINK_ANSWER_PATTERN.fullmatch(response) else 0.0


def answer_json(response: str) -> Any:
    """`json.loads` of the first `<answer>` block's content; raises ValueError when there is no block or bad JSON."""
    match = ANSWER_PATTERN.search(response)
    if match is None:
        raise ValueError("no <answer>...</answer> block in the response")
    return json.loads(match.group(1))


def capped_array(items: Iterable[Any]) -> np.ndarray:
    """`np.array` of the first 120 items, as the originals build box and point arrays (ragged input raises)."""
    return np.array(list(items)[:MAX_OBJECTS])


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """float[M, 4], float[N, 4] -> float[M, N]: box IoU with the +1 pixel convention.

    `inter = max(0, xB - xA + 1) * max(0, yB - yA + 1)`, `area = (x2 - x1 + 1) * (y2 - y1 + 1)`. Columns
    are taken as four equal `np.split` groups like the originals, so an [M, 8] array broadcasts the same
    way there and here, and widths that are not a multiple of 4 raise. Degenerate boxes give nan/inf
    (0/0) without raising; the Hungarian step then rejects nan.
    """
    px1, py1, px2, py2 = np.split(pred, 4, axis=1)
    gx1, gy1, gx2, gy2 = (column.T for column in np.split(gt, 4, axis=1))
    with np.errstate(all="ignore"):
        inter_w = np.maximum(0, np.minimum(px2, gx2) - np.maximum(px1, gx1) + 1)
        inter_h = np.maximum(0, np.minimum(py2, gy2) - np.maximum(py1, gy1) + 1)
        inter = inter_w * inter_h
        union = (px2 - px1 + 1) * (py2 - py1 + 1) + (gx2 - gx1 + 1) * (gy2 - gy1 + 1) - inter
        return inter / union


def hungarian(cost: np.ndarray, best: float) -> tuple[np.ndarray, np.ndarray, float]:
    """float[M, N] -> (rows int[K], cols int[K], total): min-cost matching, total = K * best - sum(matched cost).

    `best` is the cost-free score of one pair (1 for IoU, 3 for the three VisionReasoner hits). Rows come
    back sorted, so `pred[rows]` lists the matched predictions in their answer order.
    """
    rows, cols = linear_sum_assignment(cost)
    return rows, cols, len(rows) * best - cost[rows, cols].sum()
