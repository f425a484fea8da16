"""VideoSeg-R1 rewards: negative points, soft length penalty, difficulty budgets, composed score."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_cdt

from vrsjax.rewards import videoseg, vision_reasoner


def block_mask() -> np.ndarray:
    """bool[10, 10] with rows 2..4 and columns 3..5 set."""
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3:6] = True
    return mask


def respond(negative, extra: dict | None = None) -> str:
    item = {"bbox_2d": [3, 2, 5, 4], "point_2d": [4, 3], **(extra or {})}
    if negative is not None:
        item["negative_point_2d"] = negative
    return f"<think>ok</think><answer>{json.dumps([item])}</answer>"


def ref_negative(points: list[tuple[float, float]], mask: np.ndarray, tau: float = 40.0) -> float:
    """Distances from scipy's taxicab distance transform (points snapped to pixels, inside the image)."""
    distance = distance_transform_cdt(~mask, metric="taxicab")
    hits = [0 < distance[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))] <= tau for x, y in points]
    return sum(hits) / len(points)


# ---- negative points ----


@pytest.mark.parametrize(
    ("point", "distance"),
    [
        ((3, 2), 0.0),  # on the mask
        ((4, 3), 0.0),
        ((7, 3), 2.0),
        ((0, 0), 5.0),  # 3 columns + 2 rows
        ((45, 3), 40.0),
        ((-10, 3), 13.0),  # outside the image is allowed
        ((6.4, 3.0), 1.0),  # snapped to x = 6
        ((5.4, 3.0), 0.0),  # snapped to x = 5, inside
        ((5.5, 3.0), 1.0),  # floor(6.0) = 6
    ],
)
def test_taxicab_distance_to_mask(point, distance: float) -> None:
    assert videoseg.taxicab_distance_to_mask(point, block_mask()) == distance


def test_taxicab_distance_to_an_empty_mask_is_infinite() -> None:
    assert videoseg.taxicab_distance_to_mask((1, 1), np.zeros((4, 4), dtype=bool)) == float("inf")


@pytest.mark.parametrize(
    ("negative", "expected"),
    [
        ([7, 3], 1.0),
        ([4, 3], 0.0),  # inside the mask earns nothing
        ([45, 3], 1.0),  # d = 40 is still close enough
        ([46, 3], 0.0),
        ([[7, 3], [50, 3]], 0.5),
        ([[7, 3], [4, 3], [0, 0], [90, 90]], 0.5),
        ([[7, 3], "a"], 0.5),  # a malformed point still counts in K
        ([[7, 3], [True, 3]], 0.5),  # bools are not numbers
        ([7, "3"], 0.0),
        ([], 0.0),
        (None, 0.0),  # no negative point at all
    ],
)
def test_negative_point_reward(negative, expected: float) -> None:
    assert videoseg.negative_point_reward(respond(negative), block_mask()) == pytest.approx(expected)


def test_negative_point_reward_edge_cases() -> None:
    two_items = '<answer>[{"negative_point_2d": [7, 3]}, {"negative_point_2d": [4, 3]}, {"point_2d": [1, 1]}]</answer>'
    assert videoseg.parse_negative_points(two_items) == [(7.0, 3.0), (4.0, 3.0)]
    assert videoseg.negative_point_reward(two_items, block_mask()) == 0.5
    assert videoseg.negative_point_reward(respond([7, 3]), np.zeros((10, 10), dtype=bool)) == 0.0
    assert videoseg.negative_point_reward(respond([12, 3]), block_mask(), max_distance=5.0) == 0.0
    assert videoseg.negative_point_reward(respond(None, {"neg": [7, 3]}), block_mask(), key="neg") == 1.0
    assert videoseg.negative_point_reward('<answer>{"negative_point_2d": [7, 3]}</answer>', block_mask()) == 0.0
    assert videoseg.negative_point_reward("<answer>[7, 3]</answer>", block_mask()) == 0.0


def test_negative_point_parity_random() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((20, 24)) < rng.random() * 0.05
        mask[rng.integers(20), rng.integers(24)] = True
        points = [tuple(p) for p in rng.uniform(-0.49, [23.49, 19.49], size=(rng.integers(1, 5), 2)).round(2)]
        got = videoseg.negative_point_score(points, mask, max_distance=6.0)
        assert got == pytest.approx(ref_negative(points, mask, tau=6.0), abs=1e-5)


# ---- soft length penalty and difficulty ----


def test_thinking_text() -> None:
    assert videoseg.thinking_text("<think>a\nb</think><answer>x</answer><think>c</think>") == "a\nb"
    assert videoseg.thinking_text("<think>unclosed") == ""


def test_length_penalty() -> None:
    assert videoseg.length_penalty(512, 512, beta=1e-3) == 1.0
    assert videoseg.length_penalty(100, 512, beta=1e-3) == 1.0
    assert videoseg.length_penalty(600, 512, beta=1e-3) == pytest.approx(0.912)
    assert videoseg.length_penalty(2000, 512, beta=1e-3) == pytest.approx(-0.488)
    assert videoseg.apply_length_penalty(3.0, 600, 512, beta=1e-3) == pytest.approx(2.736)
    assert videoseg.apply_length_penalty(3.0, 2000, 512, beta=1e-3) == 0.0  # clamped at 0


@pytest.mark.parametrize(
    ("ratings", "difficulty", "level", "budget"),
    [
        ([1, 2, 3, 4, 5], 3.0, "easy", 256),
        ([4, 4, 4, 4, 4], 4.0, "medium", 512),
        ([7, 7, 7, 7, 6.95], 6.99, "medium", 512),
        ([7, 7, 7, 7, 7], 7.0, "hard", 768),
        ([10, 10, 10, 10, 10], 10.0, "hard", 768),
    ],
)
def test_difficulty_to_budget(ratings, difficulty: float, level: str, budget: int) -> None:
    assert videoseg.difficulty_score(ratings) == pytest.approx(difficulty)
    assert videoseg.difficulty_level(difficulty) == level
    assert videoseg.token_budget(difficulty) == budget


def test_budget_is_configurable() -> None:
    budget = videoseg.LengthBudget(easy_threshold=2.0, hard_threshold=9.0, medium_budget=100)
    assert videoseg.token_budget(3.0, budget) == 100
    with pytest.raises(ValueError, match="easy_threshold"):
        videoseg.LengthBudget(easy_threshold=8.0, hard_threshold=3.0)
    with pytest.raises(ValueError, match="beta"):
        videoseg.LengthBudget(beta=-1.0)


@pytest.mark.parametrize("ratings", [[1, 2, 3, 4], [0, 5, 5, 5, 5], [11, 5, 5, 5, 5]])
def test_difficulty_score_rejects_bad_ratings(ratings) -> None:
    with pytest.raises(ValueError, match="five numbers"):
        videoseg.difficulty_score(ratings)


def test_sample_difficulty() -> None:
    assert videoseg.sample_difficulty({"difficulty": 8}) == 8.0
    assert videoseg.sample_difficulty({"difficulty_ratings": [2, 4, 6, 8, 10]}) == 6.0
    assert videoseg.sample_difficulty({"difficulty": None, "difficulty_ratings": [1, 1, 1, 1, 1]}) == 1.0
    assert videoseg.sample_difficulty({}) == videoseg.DEFAULT_DIFFICULTY == 5.5
    assert videoseg.sample_difficulty({}, default=2.0) == 2.0
    for bad in ("hard", 11, True):
        with pytest.raises(ValueError, match="'difficulty'"):
            videoseg.sample_difficulty({"difficulty": bad})


# ---- composed score ----


def test_score() -> None:
    gt = [{"bbox_2d": [3, 2, 5, 4], "point_2d": [4, 3]}]
    response = respond([7, 3])
    assert vision_reasoner.score(response, gt) == 7.0
    assert videoseg.score(response, gt, block_mask(), reasoning_tokens=100) == 8.0
    assert videoseg.score(response, gt, block_mask(), reasoning_tokens=612, difficulty=5.0) == pytest.approx(7.2)
    assert videoseg.score(response, gt, block_mask(), reasoning_tokens=356, difficulty=1.0) == pytest.approx(7.2)
    assert videoseg.score(response, gt, block_mask(), reasoning_tokens=612, use_length_penalty=False) == 8.0
    assert videoseg.score(response, gt, block_mask(), 612, negative_weight=0.0) == pytest.approx(6.3)
    assert videoseg.score(response, gt, block_mask(), 5000) == 0.0


# ---- never raise, stay in range ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=15,
)
negatives = st.lists(st.integers(-100, 100) | st.floats(), min_size=2, max_size=2) | st.lists(
    st.lists(st.integers(-100, 100) | st.floats(), min_size=2, max_size=2), max_size=4
)
responses = (
    st.text(max_size=60)
    | (negatives | json_values).map(lambda n: respond(n))
    | json_values.map(lambda v: f"<answer>{json.dumps(v)}</answer>")
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses, tokens=st.integers(0, 3000), difficulty=st.floats(1.0, 10.0))
def test_rewards_are_floats_in_range(response: str, tokens: int, difficulty: float) -> None:
    gt = [{"bbox_2d": [3, 2, 5, 4], "point_2d": [4, 3]}]
    negative = videoseg.negative_point_reward(response, block_mask())
    assert isinstance(negative, float) and 0.0 <= negative <= 1.0
    total = videoseg.score(response, gt, block_mask(), tokens, difficulty)
    assert isinstance(total, float) and 0.0 <= total <= 8.0
