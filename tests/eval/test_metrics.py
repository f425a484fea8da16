"""vrsjax.eval.metrics against per-frame references written from the DAVIS 2017, VISA, LISA and Seg-Zero code."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.morphology import disk

from vrsjax.eval import metrics

# ----------------------------------------------------------------------------- references, one frame at a time


def ref_bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS `_seg2bmap` on one [H, W] frame: differs from the east, south or south-east neighbour."""
    seg = seg.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1], south[:-1, :], south_east[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def ref_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """DAVIS `f_measure` on one frame: skimage disk, cv2.dilate, the empty-boundary cases."""
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    radius = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fg_b, gt_b = ref_bmap(pred * keep), ref_bmap(gt * keep)
    kernel = disk(radius).astype(np.uint8)
    fg_dil, gt_dil = cv2.dilate(fg_b.astype(np.uint8), kernel), cv2.dilate(gt_b.astype(np.uint8), kernel)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_b * gt_dil) / float(n_fg), np.sum(gt_b * fg_dil) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """DAVIS `db_eval_iou` on one frame."""
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    inter = np.sum(gt.astype(bool) & pred.astype(bool) & keep)
    union = np.sum((gt.astype(bool) | pred.astype(bool)) & keep)
    return 1 if union == 0 else inter / union


def ref_visa(gt: np.ndarray, pred: np.ndarray, fg: np.ndarray) -> tuple[float, float]:
    """VISA `get_r2vos_robustness` and `get_r2vos_accuracy` on one frame of uint8 arrays."""
    neg, pos = ((1 - gt) * pred).sum(), fg.sum()
    return max(1 - neg / (pos + 1e-6), 0.0), np.mean(gt == pred)


def per_frame(fn, *arrays, **kwargs) -> np.ndarray:
    return np.array([fn(*frames, **kwargs) for frames in zip(*arrays, strict=True)], dtype=np.float64)


def assert_jf_match(gt, pred, void=None, bound_th=0.008):
    voids = [None] * len(gt) if void is None else void
    f_ref = np.array([ref_f(g, p, v, bound_th) for g, p, v in zip(gt, pred, voids, strict=True)], dtype=np.float64)
    j_ref = np.array([ref_j(g, p, v) for g, p, v in zip(gt, pred, voids, strict=True)], dtype=np.float64)
    np.testing.assert_array_equal(metrics.boundary_f(gt, pred, bound_th=bound_th, void=void), f_ref)
    np.testing.assert_array_equal(metrics.jaccard(gt, pred, void=void), j_ref)


# ----------------------------------------------------------------------------- masks


def blocky(rng: np.random.Generator, shape: tuple[int, ...], block: int, density: float) -> np.ndarray:
    """Random blocks of `block` pixels, cropped to shape: regions with long boundaries, not only noise."""
    t, h, w = shape
    small = rng.random((t, -(-h // block), -(-w // block))) < density
    return small.repeat(block, axis=1).repeat(block, axis=2)[:, :h, :w]


def ellipses(t: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((t, h, w), bool)
    for i in range(t):
        for _ in range(2):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 2), rng.uniform(5, w / 2)
            out[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return out


EDGE_SHAPES = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (1, 64), (1, 65), (2, 63), (3, 64), (5, 65), (7, 129), (17, 31)]


def kinds(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    """Named [3, H, W] masks covering the empty and full cases."""
    checker = (np.indices((h, w)).sum(axis=0) % 2).astype(bool)
    return {
        "empty": np.zeros((3, h, w), bool),
        "full": np.ones((3, h, w), bool),
        "noise": rng.random((3, h, w)) < 0.5,
        "sparse": rng.random((3, h, w)) < 0.05,
        "blocks": blocky(rng, (3, h, w), 3, 0.5),
        "checker": np.broadcast_to(checker, (3, h, w)),
        "last_row": np.zeros((3, h, w), bool) | (np.arange(h) == h - 1)[:, None],
        "last_col": np.zeros((3, h, w), bool) | (np.arange(w) == w - 1),
    }


# ----------------------------------------------------------------------------- J and F


@pytest.mark.parametrize("shape", EDGE_SHAPES)
def test_boundary_map_matches_seg2bmap(shape):
    rng = np.random.default_rng(0)
    for name, mask in kinds(rng, *shape).items():
        expected = np.stack([ref_bmap(frame) for frame in mask])
        np.testing.assert_array_equal(metrics.boundary_map(mask), expected, err_msg=name)
        np.testing.assert_array_equal(metrics.boundary_map(mask[0]), expected[0], err_msg=name)


@pytest.mark.parametrize("shape", EDGE_SHAPES)
def test_jf_match_davis_on_edge_cases(shape):
    rng = np.random.default_rng(1)
    masks = kinds(rng, *shape)
    for gt_name, gt in masks.items():
        for pred_name, pred in masks.items():
            try:
                assert_jf_match(gt, pred)
            except AssertionError as err:
                raise AssertionError(f"gt={gt_name} pred={pred_name} shape={shape}") from err


@st.composite
def mask_pairs(draw):
    t, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    block_gt, block_pred = draw(st.sampled_from([1, 2, 5, 9])), draw(st.sampled_from([1, 2, 5, 9]))
    gt = blocky(rng, (t, h, w), block_gt, draw(st.floats(0, 1)))
    pred = blocky(rng, (t, h, w), block_pred, draw(st.floats(0, 1)))
    if draw(st.booleans()):  # a prediction close to the GT: a few flipped pixels
        pred = gt ^ (rng.random(gt.shape) < draw(st.sampled_from([0.0, 0.01, 0.1])))
    bound_th = draw(st.sampled_from([0.008, 0.02, 0.1, 0.3, 0.0, 1, 2, 2.5, 3.7, 40]))
    return gt, pred, bound_th


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask_pairs())
def test_jf_match_davis_on_random_masks(case):
    gt, pred, bound_th = case
    assert_jf_match(gt, pred, bound_th=bound_th)
    np.testing.assert_array_equal(metrics.boundary_map(pred), np.stack([ref_bmap(frame) for frame in pred]))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=3, max_dims=3, max_side=12)), st.data())
def test_jf_match_davis_on_arbitrary_bool_arrays(gt, data):
    pred = data.draw(hnp.arrays(np.bool_, gt.shape))
    assert_jf_match(gt, pred)


def test_jf_match_davis_at_720p():
    gt, pred = ellipses(3, 720, 1280, seed=0), ellipses(3, 720, 1280, seed=1)
    pred[1] = gt[1] ^ np.roll(gt[1], 5, axis=1)  # a near miss, boundaries within the 12-pixel disk
    assert_jf_match(gt, pred)
    assert metrics.boundary_radius((720, 1280)) == 12


def test_jf_odd_size_and_void_match_davis():
    rng = np.random.default_rng(2)
    gt, pred = ellipses(4, 37, 53, seed=3), ellipses(4, 37, 53, seed=4)
    void = blocky(rng, gt.shape, 4, 0.3)
    assert_jf_match(gt, pred)
    assert_jf_match(gt, pred, void=void)
    assert_jf_match(gt, pred, void=np.ones_like(gt))


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m.astype(np.uint8) * 255,  # VISA's 0/255 PNGs
        lambda m: m.astype(np.int32) * 2,
        lambda m: -m.astype(np.int8),
        lambda m: m * 0.3,
        lambda m: m.astype(np.float32) * 1e-30,
    ],
)
def test_nonzero_is_foreground_for_every_dtype(convert):
    gt, pred = ellipses(2, 30, 70, seed=5), ellipses(2, 30, 70, seed=6)
    assert_jf_match(convert(gt), convert(pred))
    np.testing.assert_array_equal(metrics.boundary_f(convert(gt), convert(pred)), metrics.boundary_f(gt, pred))
    np.testing.assert_array_equal(metrics.jaccard(convert(gt), pred), metrics.jaccard(gt, pred))


def test_hw_input_gives_a_scalar_equal_to_the_frame_value():
    gt, pred = ellipses(2, 25, 40, seed=7), ellipses(2, 25, 40, seed=8)
    for fn in (metrics.jaccard, metrics.boundary_f):
        value = fn(gt[1], pred[1])
        assert np.ndim(value) == 0
        assert value == fn(gt, pred)[1]


def test_empty_cases_follow_davis():
    empty, full = np.zeros((1, 4, 4), bool), np.ones((1, 4, 4), bool)
    square = np.zeros((1, 4, 4), bool)
    square[0, 1:3, 1:3] = True
    assert metrics.jaccard(empty, empty)[0] == 1.0  # empty union
    assert metrics.jaccard(square, empty)[0] == 0.0
    assert metrics.boundary_f(empty, empty)[0] == 1.0  # no boundary anywhere: P = R = 1
    assert metrics.boundary_f(full, full)[0] == 1.0  # a full mask has no boundary either
    assert metrics.boundary_f(square, empty)[0] == 0.0  # P = 1, R = 0
    assert metrics.boundary_f(empty, square)[0] == 0.0  # P = 0, R = 1
    assert len(metrics.boundary_f(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))) == 0


def test_disk_rows_reproduce_skimage_disk_and_cv2_anchor():
    for radius in (0, 1, 2, 2.5, 2.3, 12.0):
        kernel = disk(radius).astype(bool)
        anchor = len(kernel) // 2
        rows = metrics.disk_rows(radius, height=100, width=100)
        expected = {(i - anchor, j - anchor) for i, j in zip(*np.nonzero(kernel), strict=True)}
        got = {(dy, dx) for dy, lo, hi in rows for dx in range(lo, hi + 1)}
        assert got == expected, radius


# ----------------------------------------------------------------------------- R and accuracy


def test_robustness_hand_derived_both_conventions():
    gt = np.zeros((1, 4, 5), bool)
    gt[0, 0, :2] = True
    pred = gt.copy()
    pred[0, 3, 3:] = True  # 2 false positives
    fg = np.zeros_like(gt)
    fg[0, :2, :] = True  # 10 foreground pixels
    assert metrics.robustness(gt, pred, fg)[0] == 1 - 2 / (10 + 1e-6)
    assert metrics.robustness(gt[0], pred[0], fg[0]) == pytest.approx(0.8)
    assert metrics.robustness(gt, pred, fg, convention="visa")[0] == 0.0  # 2 * 255 > 10
    big_fg = np.ones((1, 40, 50), bool)  # 2000 pixels
    one_fp = np.zeros((1, 40, 50), bool)
    one_fp[0, 5, 5] = True
    assert metrics.robustness(np.zeros_like(one_fp), one_fp, big_fg)[0] == 1 - 1 / (2000 + 1e-6)
    assert metrics.robustness(np.zeros_like(one_fp), one_fp, big_fg, convention="visa")[0] == 1 - 255 / (2000 + 1e-6)
    assert metrics.robustness(gt, gt, np.zeros_like(gt))[0] == 1.0  # no false positive, no foreground


def test_robustness_and_accuracy_visa_match_visa_arithmetic():
    rng = np.random.default_rng(9)
    gt = rng.integers(0, 3, (3, 11, 13)).astype(np.uint8)  # 2 where objects overlap: VISA sums anno masks
    pred = rng.random((3, 11, 13)) < 0.4
    fg = (gt > 0) | (rng.random(gt.shape) < 0.2)
    pred8, fg8 = pred.astype(np.uint8) * 255, fg.astype(np.uint8)
    expected = np.array([ref_visa(g, p, f) for g, p, f in zip(gt, pred8, fg8, strict=True)])
    np.testing.assert_array_equal(metrics.robustness(gt, pred, fg, convention="visa"), expected[:, 0])
    np.testing.assert_array_equal(metrics.robustness(gt, pred8, fg8, convention="visa"), expected[:, 0])
    np.testing.assert_array_equal(metrics.pixel_accuracy(gt, pred, convention="visa"), expected[:, 1])
    gt01 = (gt > 0).astype(np.uint8)
    binary = np.array([ref_visa(g, p, f) for g, p, f in zip(gt01, pred.astype(np.uint8), fg8, strict=True)])
    np.testing.assert_array_equal(metrics.robustness(gt, pred, fg), binary[:, 0])
    np.testing.assert_array_equal(metrics.pixel_accuracy(gt, pred), binary[:, 1])


def test_pixel_accuracy_hand_derived():
    gt = np.zeros((2, 2), bool)
    gt[0, 0] = True
    pred = np.zeros((2, 2), bool)
    pred[0, :] = True
    assert metrics.pixel_accuracy(gt, pred) == 0.75
    assert metrics.pixel_accuracy(gt, pred, convention="visa") == 0.5  # only the 2 background agreements


# ----------------------------------------------------------------------------- gIoU and cIoU


def test_giou_ciou_hand_derived():
    inter, union = [3, 0, 5], [4, 0, 10]
    lisa_giou = (3 / (4 + 1e-5) + 1.0 + 5 / (10 + 1e-5)) / (3 + 1e-5)  # an empty union counts as IoU 1
    assert metrics.giou(inter, union) == pytest.approx(lisa_giou, rel=1e-15, abs=0)
    assert metrics.giou(inter, union) == pytest.approx(0.75, abs=1e-5)
    assert metrics.ciou(inter, union) == 8 / (14 + 1e-10)
    assert metrics.giou(inter, union, convention="seg_zero") == pytest.approx((0.75 + 0.0 + 0.5) / 3, rel=1e-15)
    assert metrics.ciou(inter, union, convention="seg_zero") == 8 / 14
    assert metrics.ciou([0], [0], convention="seg_zero") == 0.0
    assert metrics.ciou([0], [0]) == 0.0


def test_intersection_union_counts_and_lisa_ignore():
    gt = np.array([[1, 1, 0], [0, 255, 0]], np.uint8)
    pred = np.array([[1, 0, 1], [0, 1, 0]], bool)
    inter, union = metrics.intersection_union(gt, pred, void=gt == 255)
    assert (inter, union) == (1, 3)
    inter, union = metrics.intersection_union(np.stack([gt, gt]), np.stack([pred, ~pred]))
    np.testing.assert_array_equal(inter, [2, 1])
    np.testing.assert_array_equal(union, [4, 5])


# ----------------------------------------------------------------------------- errors and imports


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4, 6\)"):
        metrics.jaccard(np.zeros((2, 4, 5)), np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(1, 4, 5\)"):
        metrics.boundary_f(np.zeros((4, 5)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match=r"\[T, H, W\] or \[H, W\].*\(5,\).*\(5,\)"):
        metrics.boundary_f(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4\)"):
        metrics.jaccard(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"foreground shape \(4, 4\)"):
        metrics.robustness(np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"void shape"):
        metrics.jaccard(np.zeros((4, 5)), np.zeros((4, 5)), void=np.zeros((5, 4)))


def test_bad_arguments_raise():
    mask = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match="bound_th"):
        metrics.boundary_f(mask, mask, bound_th=-0.1)
    with pytest.raises(ValueError, match="1x1"):
        metrics.boundary_f(np.zeros((2, 0, 3)), np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match="convention"):
        metrics.robustness(mask, mask, mask, convention="VISA")
    with pytest.raises(ValueError, match="convention"):
        metrics.giou([1], [2], convention="coco")
    with pytest.raises(ValueError, match="intersection shape"):
        metrics.ciou([1, 2], [2])


def test_import_is_pure_numpy():
    code = "import sys, vrsjax.eval.metrics; print(sorted({'jax', 'torch', 'cv2', 'skimage'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_popcount_fallback_without_bitwise_count(monkeypatch):
    gt, pred = ellipses(2, 19, 70, seed=10), ellipses(2, 19, 70, seed=11)
    expected = metrics.jaccard(gt, pred), metrics.boundary_f(gt, pred)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(metrics.jaccard(gt, pred), expected[0])
    np.testing.assert_array_equal(metrics.boundary_f(gt, pred), expected[1])
