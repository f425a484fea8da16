"""VisionReasoner rewards: hand-derived edge cases, parity with plain reference code, never-raise properties."""

import itertools
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrsjax.rewards import vision_reasoner


def respond(objects, think: str = "the dog. on the left.") -> str:
    return f"<think>{think}</think>\n<answer>{json.dumps(objects)}</answer>"


def obj(box, point=None) -> dict:
    point = point if point is not None else [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
    return {"bbox_2d": list(box), "point_2d": list(point)}


# ---- reference implementation, written from the formulas in REFERENCE.md section 5 ----


def ref_hits(pred: dict, gt: dict) -> int:
    (a, b), (p, q) = (pred["bbox_2d"], gt["bbox_2d"]), (pred["point_2d"], gt["point_2d"])
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    iou_hit = inter / union > 0.5
    l1_hit = sum(abs(u - v) for u, v in zip(a, b, strict=True)) / 4 < 10
    inside = a[0] <= p[0] <= a[2] and a[1] <= p[1] <= a[3]
    point_hit = math.dist(p, q) < 30 and inside
    return int(iou_hit) + int(l1_hit) + int(point_hit)


def ref_accuracy(preds: list[dict], gts: list[dict]) -> float:
    hits = [[ref_hits(p, g) for g in gts] for p in preds]
    m, n = len(preds), len(gts)
    pairings = (
        (list(enumerate(cols)) for cols in itertools.permutations(range(n), m))
        if m <= n
        else ([(i, j) for j, i in enumerate(rows)] for rows in itertools.permutations(range(m), n))
    )
    return max(sum(hits[i][j] for i, j in pairing) for pairing in pairings) / max(m, n)


# ---- format ----

FULL = {"bbox_2d": [1, 2, 30, 40], "point_2d": [10, 20]}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (respond([FULL, FULL]), 3.0),
        (respond([FULL, {"bbox_2d": [1, 2, 3, 4]}]), 2.5),
        (respond([{"bbox_2d": ["a", None, 3, 4], "point_2d": [1, 2]}]), 3.0),  # values are not checked
        (respond([{"bbox_2d": [1, 2, 3], "point_2d": [1, 2, 3]}]), 1.0),
        (respond([FULL, 5, FULL]), 1.0 + 2 / 3),  # `"bbox_2d" in 5` raises: the sum stops, keeping the first item
        (respond([FULL, "xbbox_2dx", FULL]), 1.0 + 2 / 3),  # a string holding a key name raises on item[key]
        (respond([FULL, "abc"]), 2.0),  # a plain string item adds 0
        (respond(FULL), 1.0),  # a dict iterates its keys: "bbox_2d"["bbox_2d"] raises
        (respond({"a": 1, "b": 2}), 1.0),
        (respond("abc"), 1.0),
        (respond([]), 1.0),
        (respond(None), 1.0),
        ("<think>x</think><answer>[{'bbox_2d': [1, 2, 3, 4], 'point_2d': [1, 2]}]</answer>", 1.0),  # single quotes
        ("x " + respond([FULL]), 2.0),  # text outside the tags costs the tag point only
        (f"<answer>{json.dumps([FULL])}</answer>", 2.0),
        ("", 0.0),
    ],
)
def test_format_reward(response: str, expected: float) -> None:
    assert vision_reasoner.format_reward(response) == pytest.approx(expected, abs=1e-12)


# ---- accuracy ----


def test_accuracy_exact_match_scores_three() -> None:
    gt = [obj([0, 0, 100, 100])]
    assert vision_reasoner.accuracy_reward(respond(gt), gt) == 3.0
    assert vision_reasoner.accuracy_reward(respond(gt), json.dumps(gt)) == 3.0  # the original's JSON string form


def test_accuracy_point_must_lie_in_its_own_box() -> None:
    gt = [obj([0, 0, 10, 10], [5, 5])]
    assert vision_reasoner.accuracy_reward(respond([obj([0, 0, 10, 10], [11, 5])]), gt) == 2.0
    assert vision_reasoner.accuracy_reward(respond([obj([0, 0, 10, 10], [10, 10])]), gt) == 3.0  # edges count


def test_accuracy_thresholds_are_strict() -> None:
    gt = [obj([0, 0, 100, 100], [50, 50])]
    # shift by 10: mean L1 = 10 (not < 10); IoU 91^2 / (2 * 101^2 - 91^2) = 0.683; point 14.1 px away
    assert vision_reasoner.accuracy_reward(respond([obj([10, 10, 110, 110], [60, 60])]), gt) == 2.0
    # point exactly 30 px away misses
    assert vision_reasoner.accuracy_reward(respond([obj([0, 0, 100, 100], [80, 50])]), gt) == 2.0


def test_accuracy_divides_by_the_larger_side_and_caps_at_120() -> None:
    gt = [obj([0, 0, 100, 100])]
    far = obj([300, 300, 400, 400])
    assert vision_reasoner.accuracy_reward(respond([far, gt[0]]), gt) == 1.5
    assert vision_reasoner.accuracy_reward(respond(gt), gt + [far, far]) == 1.0
    assert vision_reasoner.accuracy_reward(respond(gt * 130), gt) == pytest.approx(3 / 120)
    assert vision_reasoner.accuracy_reward(respond(gt), gt * 130) == pytest.approx(3 / 120)


def test_accuracy_nan_iou_is_a_miss_not_a_failure() -> None:
    # area -1 against area 1: IoU 0/0 = nan counts as no IoU hit, but the L1 hit (mean 1.5) survives
    gt = [obj([1, 1, 1, 1], [1, 1])]
    assert vision_reasoner.accuracy_reward(respond([obj([0, 0, -2, 0], [-1, 0])]), gt) == 1.0


@pytest.mark.parametrize(
    "objects",
    [
        [],
        [{"bbox_2d": [0, 0, 100, 100]}],  # no point_2d: KeyError
        [{"bbox_2d": [0, 0, 100], "point_2d": [50, 50]}],
        [{"bbox_2d": [0, 0, 100, 100], "point_2d": [50]}],
        [{"bbox_2d": [0, 0, 100, 100], "point_2d": ["50", "50"]}],
        [{"bbox_2d": [0, 0, 100, 100], "point_2d": [50, 50]}, {"bbox_2d": [0, 0, 1], "point_2d": [0, 0]}],
        {"bbox_2d": [0, 0, 100, 100], "point_2d": [50, 50]},
        "[]",
    ],
)
def test_accuracy_malformed_answers_score_zero(objects) -> None:
    assert vision_reasoner.accuracy_reward(respond(objects), [obj([0, 0, 100, 100])]) == 0.0


def test_accuracy_answer_parsing() -> None:
    gt = [obj([0, 0, 100, 100])]
    body = json.dumps(gt)
    assert vision_reasoner.accuracy_reward(f"junk <answer>\n{body}\n</answer> junk", gt) == 3.0
    assert vision_reasoner.accuracy_reward(f"<answer>{body}</answer><answer>[]</answer>", gt) == 3.0
    assert vision_reasoner.accuracy_reward(f"<answer>```json\n{body}\n```</answer>", gt) == 0.0
    assert vision_reasoner.accuracy_reward(f"<answer>{body}", gt) == 0.0
    assert vision_reasoner.accuracy_reward(respond(gt), []) == 0.0


def test_accuracy_parity_random() -> None:
    rng = random.Random(0)
    for _ in range(300):
        gts = [obj([x, y, x + rng.randint(5, 80), y + rng.randint(5, 80)]) for x, y in _corners(rng, rng.randint(1, 4))]
        preds = []
        for _ in range(rng.randint(1, 4)):
            base = rng.choice(gts)["bbox_2d"]
            box = [v + rng.uniform(-15, 15) for v in base] if rng.random() < 0.7 else [5, 5, 60, 60]
            point = [(box[0] + box[2]) / 2 + rng.uniform(-40, 40), (box[1] + box[3]) / 2 + rng.uniform(-20, 20)]
            preds.append(obj(box, point))
        assert vision_reasoner.accuracy_reward(respond(preds), gts) == pytest.approx(ref_accuracy(preds, gts), abs=1e-5)


def _corners(rng: random.Random, count: int) -> list[tuple[int, int]]:
    return [(rng.randint(0, 200), rng.randint(0, 200)) for _ in range(count)]


# ---- non-repeat ----


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("a. b. a. c.", 1.0),  # one repeat is tolerated
        ("a. a. a.", 0.0),
        ("a. b. a. b.", 0.0),  # the second repeat need not be of the same sentence
        ("a . a. a .", 0.0),  # sentences are stripped
        ("a.a", 1.0),
        ("", 1.0),
        ("....", 1.0),
        ("<think>x. I see. I see. I see.</think>", 0.0),
    ],
)
def test_non_repeat_reward(response: str, expected: float) -> None:
    assert vision_reasoner.non_repeat_reward(response) == expected


def test_score_sums_the_terms_with_weights() -> None:
    gt = [obj([0, 0, 100, 100])]
    assert vision_reasoner.score(respond(gt), gt) == 7.0
    assert vision_reasoner.score(respond(gt, think="x. x. x. x."), gt) == 6.0  # "<think>x" differs from "x"
    assert vision_reasoner.score(respond(gt), gt, format_weight=0.5, accuracy_weight=0.0) == 2.5


# ---- never raise, stay in range ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
numbers = st.integers(-10, 300) | st.floats(-10, 300)
items = st.fixed_dictionaries(
    {},
    optional={
        "bbox_2d": st.lists(numbers, min_size=4, max_size=4) | json_values,
        "point_2d": st.lists(numbers, min_size=2, max_size=2) | json_values,
    },
)
fragments = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", '"', ".", "\n"])
responses = (
    st.text(max_size=80)
    | st.lists(fragments | st.text(max_size=4), max_size=20).map("".join)
    | st.tuples(st.text(max_size=10), (st.lists(items, max_size=4) | json_values).map(json.dumps)).map(
        lambda t: f"{t[0]}<think>x</think><answer>{t[1]}</answer>"
    )
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses)
def test_every_term_is_a_float_in_range(response: str) -> None:
    gt = [obj([0, 0, 100, 100]), obj([150, 20, 250, 90])]
    fmt = vision_reasoner.format_reward(response)
    acc = vision_reasoner.accuracy_reward(response, gt)
    rep = vision_reasoner.non_repeat_reward(response)
    assert all(isinstance(v, float) for v in (fmt, acc, rep))
    assert 0.0 <= fmt <= 3.0 and 0.0 <= acc <= 3.0 and rep in (0.0, 1.0)
    assert 0.0 <= vision_reasoner.score(response, gt) <= 7.0
