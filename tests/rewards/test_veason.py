"""Veason-R1 rewards: hand-derived edge cases, parity with straightforward reference code, never-raise properties."""

import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrsjax.rewards import veason

FRAME_IDS = [2, 9, 16, 23]


def answer(keyframe=9, boxes=((0, 0, 9, 9),), think="look. the cat.") -> str:
    payload = json.dumps({"keyframe_timestamp": keyframe, "bbox_2d_list": [list(b) for b in boxes]})
    return f"<think>{think}</think>\n<answer>{payload}</answer>"


def masks_with_areas(areas: list[int], size: int = 16) -> np.ndarray:
    """bool[T, size, size] whose frame t has areas[t] pixels set (row-major)."""
    masks = np.zeros((len(areas), size * size), dtype=bool)
    for t, area in enumerate(areas):
        masks[t, :area] = True
    return masks.reshape(len(areas), size, size)


# ---- reference implementations, written from the formulas in REFERENCE.md section 5 ----


def ref_iou(a, b) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = inter_w * inter_h
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union


def ref_best_matching_sum(score: list[list[float]]) -> float:
    """Largest sum of score[i][j] over one-to-one pairings of size min(M, N), by brute force."""
    m, n = len(score), len(score[0])
    if m <= n:
        return max(sum(score[i][j] for i, j in enumerate(cols)) for cols in itertools.permutations(range(n), m))
    return max(sum(score[i][j] for j, i in enumerate(rows)) for rows in itertools.permutations(range(m), n))


def ref_spatial(pred, gt) -> float:
    ious = [[ref_iou(p, g) for g in gt] for p in pred]
    return ref_best_matching_sum(ious) / max(len(pred), len(gt))


def ref_keyframe(keyframe: int, masks: np.ndarray, frame_ids: list[int]) -> float:
    areas = [int(m.sum()) for m in masks]
    if keyframe not in frame_ids or max(areas) == 0:
        return 0.0
    return areas[frame_ids.index(keyframe)] / max(areas)


def ref_consistency(pred: np.ndarray, gt: np.ndarray) -> float:
    total = 0.0
    for p, g in zip(pred, gt, strict=True):
        inter, union = int((p & g).sum()), int((p | g).sum())
        total += 1.0 if union == 0 else inter / union
    return total / len(pred)


# ---- format ----


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (answer(), 2.0),
        (answer(boxes=()), 1.0),  # an empty list earns the tags only
        (answer(boxes=((0, 0, 9, 9), (1, 2, 3))), 1.5),  # each valid box adds 1/n
        (answer(boxes=((0, 0, 9, 9), (1.5, 2, 3, 4), (0, 0, 1, 1, 1))), 1.0 + 2 / 3),
        (answer(keyframe=9.0), 1.0),  # a float timestamp fails the int check
        (answer(keyframe="9"), 1.0),
        (answer(keyframe=True), 2.0),  # bool is an int subclass
        (answer(boxes=((True, False, 1, 2),)), 2.0),
        (answer(boxes=(("1", 2, 3, 4),)), 1.0),
        ("pre " + answer(), 1.0),  # text outside the tags breaks the fullmatch only
        (answer() + " post", 1.0),
        ("<think>x</think><answer>{'keyframe_timestamp': 9, 'bbox_2d_list': []}</answer>", 1.0),  # single quotes
        ('<think>x</think><answer>{"keyframe_timestamp": 9, "bbox_2d_list": [[0,0,9,9]]</answer>', 1.0),
        ('<answer>{"keyframe_timestamp": 9, "bbox_2d_list": [[0,0,9,9]]}</answer>', 1.0),
        ('<think>x</think><answer>[{"keyframe_timestamp": 9}]</answer>', 1.0),  # JSON must be an object
        # the object pattern skips an answer block that does not start with "{" and takes the next one
        (
            '<think>x</think><answer>no</answer><answer>{"keyframe_timestamp": 1, "bbox_2d_list": [[1,1,2,2]]}'
            "</answer>",
            2.0,
        ),
        ('<think>a</think>  \n <answer> {"keyframe_timestamp": 1, "bbox_2d_list": [[1,1,2,2]]} \n</answer>', 2.0),
        ("", 0.0),
    ],
)
def test_format_reward(response: str, expected: float) -> None:
    assert veason.format_reward(response) == pytest.approx(expected, abs=1e-12)


# ---- parsing ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [(9, 9), (9.7, 9), (-0.5, 0), ("9", 9), (" 9 ", 9), ("9.0", None), (True, 1), (None, None), ([9], None)],
)
def test_parse_keyframe_uses_int_conversion(value, expected) -> None:
    response = f'<answer>{{"keyframe_timestamp": {json.dumps(value)}, "bbox_2d_list": []}}</answer>'
    assert veason.parse_keyframe(response) == expected


def test_parse_keyframe_edge_cases() -> None:
    assert veason.parse_keyframe('<answer>{"bbox_2d_list": []}</answer>') == -1  # missing key reads as -1
    assert veason.parse_keyframe("<answer>[1, 2]</answer>") is None
    assert veason.parse_keyframe("no answer") is None
    assert veason.parse_keyframe('<answer>{"keyframe_timestamp": NaN}</answer>') is None


def test_parse_answer() -> None:
    assert veason.parse_answer(answer(keyframe="16", boxes=[(1, 2, 3, 4)])) == (16, [[1, 2, 3, 4]])
    assert veason.parse_answer("<answer>{'keyframe_timestamp': 16}</answer>") == (None, None)


def test_parse_boxes() -> None:
    assert veason.parse_boxes(answer(boxes=((1, 2, 3, 4), (5, 6, 7, 8)))) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert len(veason.parse_boxes(answer(boxes=[(0, 0, 1, 1)] * 130))) == 120
    assert veason.parse_boxes('<answer>{"keyframe_timestamp": 1}</answer>') is None


# ---- keyframe ----


@pytest.mark.parametrize(
    ("keyframe", "expected"),
    [(9, 0.5), (16, 1.0), (2, 0.0), (10, 0.0), (9.9, 0.5), ("16", 1.0), ("16.0", 0.0), (True, 0.0)],
)
def test_keyframe_reward(keyframe, expected: float) -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    assert veason.keyframe_reward(answer(keyframe=keyframe), masks, FRAME_IDS) == pytest.approx(expected)


def test_keyframe_reward_edge_cases() -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    assert veason.keyframe_reward(answer(), masks_with_areas([0, 0, 0, 0]), FRAME_IDS) == 0.0
    assert veason.keyframe_reward(answer(), masks[1:2], FRAME_IDS) == 0.0  # position past the masks
    assert veason.keyframe_reward(answer(), np.zeros((0, 4, 4)), []) == 0.0
    assert veason.keyframe_reward(answer(), masks.astype(np.uint8), np.array(FRAME_IDS)) == pytest.approx(0.5)
    assert veason.keyframe_reward("<answer>{9}</answer>", masks, FRAME_IDS) == 0.0


# ---- spatial ----


def test_spatial_reward_uses_plus_one_pixel_convention() -> None:
    gt = [[], [[5, 5, 14, 14]], [], []]
    # inter 5x5 = 25, areas 10x10 = 100 each: 25 / 175 (without the +1 it would be 16 / 146)
    assert veason.spatial_reward(answer(boxes=[(0, 0, 9, 9)]), gt, FRAME_IDS) == pytest.approx(1 / 7)
    # a point box [x, y, x, y] has area 1 and matches itself exactly
    assert veason.spatial_reward(answer(boxes=[(3, 3, 3, 3)]), [[], [[3, 3, 3, 3]], [], []], FRAME_IDS) == 1.0


def test_spatial_reward_more_predictions_than_targets() -> None:
    gt = [[], [[0, 0, 9, 9]], [], []]
    response = answer(boxes=[(50, 50, 60, 60), (0, 0, 9, 9), (0, 0, 8, 9)])
    assert veason.spatial_reward(response, gt, FRAME_IDS) == pytest.approx(1 / 3)
    match = veason.match_boxes(response, gt, FRAME_IDS)
    assert match.position == 1 and match.boxes.tolist() == [[0, 0, 9, 9]]


@pytest.mark.parametrize(
    "boxes",
    [
        [],  # an empty list cannot be split into four columns
        [(1, 2, 3)],
        [(0, 0, 9, 9), (1, 2, 3)],  # ragged
        [("0", 0, 9, 9)],  # strings
        [(True, False, True, True)],  # an all-bool array cannot be subtracted
        [(0, 0, None, 9)],
        [(0, 0, -2, 0)],  # area -1 against an area-1 GT box: 0 / 0 = nan, rejected by the Hungarian step
    ],
)
def test_spatial_reward_malformed_boxes_score_zero(boxes) -> None:
    gt = [[], [[10, 10, 10, 10]], [], []]
    assert veason.spatial_reward(answer(boxes=boxes), gt, FRAME_IDS) == 0.0
    assert veason.match_boxes(answer(boxes=boxes), gt, FRAME_IDS) is None


def test_spatial_reward_quirks_of_the_original() -> None:
    gt = [[], [[0, 0, 9, 9]], [], []]
    # an 8-number box splits into two column pairs, i.e. two boxes [0,0,9,9] and [1,1,9,9] against one GT box
    assert veason.spatial_reward(answer(boxes=[(0, 1, 0, 1, 9, 9, 9, 9)]), gt, FRAME_IDS) == 1.0
    # a string list iterates its characters and fails; a dict iterates its keys and fails
    for bad in ('"0,0,9,9"', '{"a": [0, 0, 9, 9]}', "null", "5"):
        response = f'<answer>{{"keyframe_timestamp": 9, "bbox_2d_list": {bad}}}</answer>'
        assert veason.spatial_reward(response, gt, FRAME_IDS) == 0.0
    # float and string timestamps go through int()
    assert veason.spatial_reward(answer(keyframe=9.5), gt, FRAME_IDS) == 1.0
    assert veason.spatial_reward(answer(keyframe="9"), gt, FRAME_IDS) == 1.0
    assert veason.spatial_reward(answer(keyframe=10), gt, FRAME_IDS) == 0.0  # not a sampled frame
    # the tags need not be well formed for the spatial term: only the first <answer> block counts
    assert veason.spatial_reward("junk " + answer() + " junk", gt, FRAME_IDS) == 1.0
    assert veason.spatial_reward(answer() + "<answer>{}</answer>", gt, FRAME_IDS) == 1.0


def test_spatial_reward_caps_at_120_objects() -> None:
    gt = [[], [[0, 0, 9, 9]], [], []]
    assert veason.spatial_reward(answer(boxes=[(0, 0, 9, 9)] * 130), gt, FRAME_IDS) == pytest.approx(1 / 120)
    many_gt = [[], [[0, 0, 9, 9]] * 130, [], []]
    assert veason.spatial_reward(answer(boxes=[(0, 0, 9, 9)]), many_gt, FRAME_IDS) == pytest.approx(1 / 120)


def test_gt_boxes_from_solution() -> None:
    solution = json.dumps(
        {"0": [{"bbox_2d": [0, 0, 0, 0]}], "1": [{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]}
    )
    assert veason.gt_boxes_from_solution(solution) == [[[0, 0, 0, 0]], [[1, 2, 3, 4], [5, 6, 7, 8]]]


# ---- parity with the reference code on random cases ----


def random_box(rng: random.Random, near=None) -> list[float]:
    if near is not None and rng.random() < 0.5:
        return [v + rng.uniform(-3, 3) for v in near]
    x, y = rng.uniform(0, 50), rng.uniform(0, 50)
    box = [x, y, x + rng.uniform(0, 30), y + rng.uniform(0, 30)]
    return [round(v) for v in box] if rng.random() < 0.5 else box


def test_spatial_and_keyframe_parity_random() -> None:
    rng = random.Random(0)
    for _ in range(300):
        frame_ids = sorted(rng.sample(range(40), 5))
        masks = np.random.default_rng(rng.randrange(1 << 30)).random((5, 12, 12)) < rng.random() * 0.3
        gt = [[random_box(rng) for _ in range(rng.randint(1, 4))] for _ in frame_ids]
        position = rng.randrange(5)
        pred = [random_box(rng, rng.choice(gt[position])) for _ in range(rng.randint(1, 4))]
        keyframe = frame_ids[position] if rng.random() < 0.8 else rng.randrange(40)
        response = answer(keyframe=keyframe, boxes=pred)
        expected = ref_spatial(pred, gt[frame_ids.index(keyframe)]) if keyframe in frame_ids else 0.0
        assert veason.spatial_reward(response, gt, frame_ids) == pytest.approx(expected, abs=1e-5)
        assert veason.keyframe_reward(response, masks, frame_ids) == pytest.approx(
            ref_keyframe(keyframe, masks, frame_ids), abs=1e-5
        )


# ---- consistency ----


def test_consistency_reward() -> None:
    gt = np.zeros((3, 4, 4), dtype=bool)
    gt[0, :2, :2] = True
    gt[1, :2, :] = True
    pred = np.zeros_like(gt)
    pred[0, :2, :1] = True  # IoU 2/4
    pred[1, :2, :] = True  # IoU 1; frame 2 is empty on both sides: IoU 1
    assert veason.consistency_reward(pred, gt) == pytest.approx((0.5 + 1 + 1) / 3)
    assert veason.consistency_reward(pred[:0], gt) == 0.0
    assert veason.consistency_reward(np.zeros((3, 5, 5), dtype=bool), gt) == 0.0  # shape clash
    assert veason.consistency_reward(pred, gt[:2]) == pytest.approx((0.5 + 1) / 3)  # divides by len(pred)


def test_consistency_parity_random() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        pred, gt = rng.random((2, 4, 9, 9)) < rng.random((2, 1, 1, 1)) * 0.4
        assert veason.consistency_reward(pred, gt) == pytest.approx(ref_consistency(pred, gt), abs=1e-5)


# ---- composed score ----


class RecordingPropagate:
    def __init__(self, masks: np.ndarray | None = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[int, list[list[float]]]] = []
        self.masks, self.error = masks, error

    def __call__(self, position: int, boxes: np.ndarray) -> np.ndarray | None:
        self.calls.append((position, boxes.tolist()))
        if self.error is not None:
            raise self.error
        return self.masks


def test_score_passes_matched_boxes_in_answer_order() -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    gt = [[], [[20, 20, 29, 29], [0, 0, 9, 9]], [], []]
    propagate = RecordingPropagate(masks)
    response = answer(boxes=[(0, 0, 9, 9), (40, 40, 45, 45), (20, 20, 29, 29)])
    total = veason.score(response, masks, gt, FRAME_IDS, propagate)
    assert propagate.calls == [(1, [[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 29.0, 29.0]])]
    assert total == pytest.approx(2.0 + 0.5 + 2 / 3 + 1.0)


def test_score_components_and_ablations() -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    gt = [[], [[0, 0, 9, 9]], [], []]
    response = answer()
    terms = veason.score_components(response, masks, gt, FRAME_IDS, RecordingPropagate(masks))
    assert terms == pytest.approx({"format": 2.0, "keyframe": 0.5, "spatial": 1.0, "consistency": 1.0})
    no_sam = RecordingPropagate(masks)
    assert veason.score(response, masks, gt, FRAME_IDS, no_sam, consistency_weight=0.0) == pytest.approx(3.5)
    assert no_sam.calls == []
    assert veason.score(response, masks, gt, FRAME_IDS, RecordingPropagate(masks), keyframe_weight=0) == 4.0
    assert veason.score(response, masks, gt, FRAME_IDS, RecordingPropagate(masks), spatial_weight=0) == 3.5
    assert veason.score(response, masks, gt, FRAME_IDS, None) == pytest.approx(3.5)


@pytest.mark.parametrize("propagate", [RecordingPropagate(error=RuntimeError("sam2 failed")), RecordingPropagate()])
def test_failed_propagation_costs_only_the_consistency_term(propagate) -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    terms = veason.score_components(answer(), masks, [[], [[0, 0, 9, 9]], [], []], FRAME_IDS, propagate)
    assert terms == pytest.approx({"format": 2.0, "keyframe": 0.5, "spatial": 1.0, "consistency": 0.0})


def test_no_propagation_without_a_sampled_keyframe_or_boxes() -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    propagate = RecordingPropagate(masks)
    gt = [[], [[0, 0, 9, 9]], [], []]
    veason.score(answer(keyframe=10), masks, gt, FRAME_IDS, propagate)
    veason.score(answer(boxes=[()]), masks, gt, FRAME_IDS, propagate)  # [[]] matches nothing
    assert propagate.calls == []


# ---- never raise, stay in range ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)
answers = st.fixed_dictionaries(
    {},
    optional={
        "keyframe_timestamp": st.sampled_from(FRAME_IDS) | json_values,
        "bbox_2d_list": st.lists(st.lists(st.integers(-5, 60) | st.floats(-5, 60), min_size=4, max_size=4), max_size=4)
        | json_values,
    },
)
fragments = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "{", "}", "[", "]", '"', "'", ",", "\n"])
responses = (
    st.text(max_size=80)
    | st.lists(fragments | st.text(max_size=4), max_size=20).map("".join)
    | st.tuples(st.text(max_size=10), answers.map(json.dumps), st.text(max_size=10)).map(
        lambda t: f"{t[0]}<think>x</think><answer>{t[1]}</answer>{t[2]}"
    )
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response=responses)
def test_every_term_is_a_float_in_range(response: str) -> None:
    masks = masks_with_areas([0, 20, 40, 10])
    gt = [[[0, 0, 9, 9]], [[0, 0, 9, 9], [20, 20, 30, 30]], [[1, 1, 5, 5]], [[0, 0, 0, 0]]]
    terms = veason.score_components(response, masks, gt, FRAME_IDS, lambda k, b: masks)
    bounds = {"format": 2.0, "keyframe": 1.0, "spatial": 1.0, "consistency": 1.0}
    for name, value in terms.items():
        assert isinstance(value, float) and 0.0 <= value <= bounds[name], (name, value)
    total = veason.score(response, masks, gt, FRAME_IDS, lambda k, b: masks)
    assert isinstance(total, float) and 0.0 <= total <= 5.0
