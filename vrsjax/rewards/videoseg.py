"""VideoSeg-R1 rewards: VisionReasoner's terms + a negative-point reward, scaled by a difficulty-aware length penalty.

The paper (Xu et al. 2025, arXiv 2511.16077) publishes the formulas but no code and few constants: the
negative-point threshold (40 px) is from the paper; the answer key for negative points, the penalty slope
beta, the easy/hard difficulty thresholds, the per-level token budgets and the default difficulty are our
choices, kept as parameters with documented defaults (`LengthBudget`, `DEFAULT_DIFFICULTY`). The
final reward is `R * s` with `s = 1 - beta (L_used - L_budget)` over budget, clamped at 0 (the paper does
not say what happens when s < 0). L_used, the number of reasoning tokens, comes from the caller.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrsjax.rewards import vision_reasoner
from vrsjax.rewards.boxes import answer_json

NEGATIVE_POINT_KEY = "negative_point_2d"  # our choice: the paper does not publish the answer format
NEGATIVE_POINT_MAX_DISTANCE = 40.0  # tau_neg from the paper, in pixels
THINK_PATTERN = re.compile(r"<think>(.*?)</think>", re.DOTALL)
DEFAULT_DIFFICULTY = 5.5  # our choice: the middle of [1, 10], a "medium" sample under the default thresholds


@dataclass(frozen=True)
class LengthBudget:
    """Difficulty -> reasoning-token budget, and the soft penalty slope. None of these are published: the values
    below are our defaults (max_response_length is 1024 in the recipes, so the hard budget stays under it).

    D < easy_threshold is easy, D >= hard_threshold is hard, anything between is medium.
    beta: reward fraction lost per reasoning token over budget (1e-3: 1000 tokens over -> 0).
    """

    easy_threshold: float = 4.0
    hard_threshold: float = 7.0
    easy_budget: int = 256
    medium_budget: int = 512
    hard_budget: int = 768
    beta: float = 1e-3

    def __post_init__(self) -> None:
        if not 1.0 <= self.easy_threshold <= self.hard_threshold <= 10.0:
            raise ValueError(
                f"LengthBudget needs 1 <= easy_threshold <= hard_threshold <= 10, "
                f"got {self.easy_threshold} and {self.hard_threshold}"
            )
        if min(self.easy_budget, self.medium_budget, self.hard_budget) < 0 or self.beta < 0:
            raise ValueError(f"LengthBudget budgets and beta must be >= 0, got {self}")


DEFAULT_BUDGET = LengthBudget()


def _is_number(value: Any) -> bool:
    """A finite int or float; bools, strings and ints beyond float range are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _as_point(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def parse_negative_points(response: str, key: str = NEGATIVE_POINT_KEY) -> list[tuple[float, float] | None]:
    """The negative points of a VisionReasoner-style answer list: each item's `key` holds [x, y] or [[x, y], ...].

    Returns one entry per predicted point, None for a malformed one (it still counts in K); [] when the
    answer does not parse or is not a list. Numbers are finite ints/floats, not bools or strings.
    """
    try:
        answer = answer_json(response)
    except Exception:
        return []
    if not isinstance(answer, list):
        return []
    points: list[tuple[float, float] | None] = []
    for item in answer:
        value = item.get(key) if isinstance(item, dict) else None
        if value is None or value == []:
            continue
        if isinstance(value, list) and any(isinstance(v, list) for v in value):  # [[x, y], ...]
            points.extend(_as_point(v) for v in value)
        else:
            points.append(_as_point(value))
    return points


def taxicab_distance_to_mask(point: tuple[float, float], mask: np.ndarray) -> float:
    """(x, y), bool[H, W] -> min |row - y| + |col - x| over mask pixels, after snapping the point to its pixel
    (floor(v + 0.5)); 0 inside the mask, inf for an empty mask. Points outside the image are allowed."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return math.inf
    x, y = float(math.floor(point[0] + 0.5)), float(math.floor(point[1] + 0.5))
    return float(np.min(np.abs(rows - y) + np.abs(cols - x)))


def negative_point_score(
    points: Sequence[tuple[float, float] | None], gt_mask: np.ndarray, max_distance: float = NEGATIVE_POINT_MAX_DISTANCE
) -> float:
    """0..1: each point with 0 < taxicab distance to the GT mask <= max_distance adds 1/K (K = len(points)).

    gt_mask: bool[H, W], the union of the targets on the segmented frame. None points add nothing.
    """
    if not points:
        return 0.0
    mask = np.asarray(gt_mask) > 0
    near = [p is not None and 0 < taxicab_distance_to_mask(p, mask) <= max_distance for p in points]
    return sum(near) / len(points)


def negative_point_reward(
    response: str,
    gt_mask: np.ndarray,
    *,
    max_distance: float = NEGATIVE_POINT_MAX_DISTANCE,
    key: str = NEGATIVE_POINT_KEY,
) -> float:
    """0..1: `negative_point_score` of the answer's negative points against gt_mask bool[H, W]; 0 on any failure."""
    try:
        return negative_point_score(parse_negative_points(response, key), gt_mask, max_distance)
    except Exception:
        return 0.0


def thinking_text(response: str) -> str:
    """The text inside the first <think>...</think> (DOTALL), "" when absent: tokenize it to get L_used."""
    match = THINK_PATTERN.search(response) if isinstance(response, str) else None
    return "" if match is None else match.group(1)


def length_penalty(used: int, budget: int, beta: float = LengthBudget.beta) -> float:
    """s = 1 - beta (used - budget) when used > budget, else 1 (may go below 0; `apply_length_penalty` clamps)."""
    return 1.0 - beta * (used - budget) if used > budget else 1.0


def apply_length_penalty(reward: float, used: int, budget: int, beta: float = LengthBudget.beta) -> float:
    """max(0, reward * s): the paper's R_final = R_original * s, clamped at 0 (our choice; unspecified there)."""
    return max(0.0, reward * length_penalty(used, budget, beta))


def difficulty_score(ratings: Sequence[float]) -> float:
    """float[5] ratings in [1, 10] (scene, segmentation, temporal, motion, linguistic) -> D, their mean in [1, 10]."""
    values = [float(r) for r in ratings]
    if len(values) != 5 or not all(1.0 <= v <= 10.0 for v in values):
        raise ValueError(f"difficulty ratings must be five numbers in [1, 10], got {list(ratings)!r}")
    return sum(values) / 5.0


def difficulty_level(difficulty: float, budget: LengthBudget = DEFAULT_BUDGET) -> str:
    """D -> "easy" (D < easy_threshold), "hard" (D >= hard_threshold) or "medium"."""
    if difficulty < budget.easy_threshold:
        return "easy"
    return "hard" if difficulty >= budget.hard_threshold else "medium"


def token_budget(difficulty: float, budget: LengthBudget = DEFAULT_BUDGET) -> int:
    """D -> L_budget = L(D), the reasoning-token budget of its level."""
    level = difficulty_level(difficulty, budget)
    return {"easy": budget.easy_budget, "medium": budget.medium_budget, "hard": budget.hard_budget}[level]


def sample_difficulty(sample: Mapping[str, Any], default: float = DEFAULT_DIFFICULTY) -> float:
    """A sample's D: its "difficulty" field (a number in [1, 10]), else the mean of its "difficulty_ratings"
    (five 1-10 ratings), else `default` (5.5, medium). A present but invalid field raises ValueError."""
    if sample.get("difficulty") is not None:
        value = sample["difficulty"]
        if not _is_number(value) or not 1.0 <= value <= 10.0:
            raise ValueError(f"sample field 'difficulty' must be a number in [1, 10], got {value!r}")
        return float(value)
    if sample.get("difficulty_ratings") is not None:
        return difficulty_score(sample["difficulty_ratings"])
    return default


def score(
    response: str,
    gt_objects: list[dict[str, Any]] | str,
    gt_mask: np.ndarray,
    reasoning_tokens: int,
    difficulty: float = DEFAULT_DIFFICULTY,
    *,
    budget: LengthBudget = DEFAULT_BUDGET,
    negative_weight: float = 1.0,
    use_length_penalty: bool = True,
    negative_key: str = NEGATIVE_POINT_KEY,
    max_distance: float = NEGATIVE_POINT_MAX_DISTANCE,
) -> float:
    """VideoSeg-R1 reward: (VisionReasoner score + negative_weight * negative-point reward) * s, clamped at 0.

    gt_objects: the VisionReasoner targets on the segmented frame; gt_mask: bool[H, W] their union mask;
    reasoning_tokens: L_used, the token count of `thinking_text(response)`; difficulty: D in [1, 10]
    (see `sample_difficulty`).
    The paper's R_original lists only the VisionReasoner terms; adding the negative-point reward before
    the penalty is our reading. Range 0..8 with unit weights.
    """
    reward = vision_reasoner.score(response, gt_objects) + negative_weight * negative_point_reward(
        response, gt_mask, max_distance=max_distance, key=negative_key
    )
    if not use_length_penalty:
        return float(reward)
    return apply_length_penalty(reward, reasoning_tokens, token_budget(difficulty, budget), budget.beta)
