"""J and F on a 100-frame 720p sequence: vrsjax's vectorized metrics against the DAVIS 2017 reference.

The reference is written here from the DAVIS definition (`davis2017/metrics.py`): J summed over the whole
stack as `db_eval_iou` does, F one frame at a time with `_seg2bmap`, `skimage.morphology.disk` and
`cv2.dilate` as `db_eval_boundary` does. Both run in this process on the same masks (moving, wobbling
blobs and a jittered prediction of them), alternating, best of `--repeats`; the values must be identical.

    python benchmarks/metrics.py [--frames 100] [--repeats 5] [--write]

`--write` replaces the "## Metrics" section of BENCHMARKS.md with the result.
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import report as report_lib
import skimage
from skimage.morphology import disk

from vrsjax.eval import metrics
from vrsjax.progress import progress_bar

HEIGHT, WIDTH = 720, 1280
TITLE = "Metrics"


# ----------------------------------------------------------------------------- masks


def blob(
    height: int, width: int, center: np.ndarray, radius: float, wobble: float, lobes: int, phase: float
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A star-shaped blob r(angle) = radius * (1 + wobble * sin(lobes * angle + phase)): (window, bool mask)."""
    reach = radius * (1 + wobble) + 1
    y0, y1 = np.clip([center[0] - reach, center[0] + reach + 1], 0, height).astype(int)
    x0, x1 = np.clip([center[1] - reach, center[1] + reach + 1], 0, width).astype(int)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    angle = np.arctan2(yy - center[0], xx - center[1])
    inside = np.hypot(yy - center[0], xx - center[1]) <= radius * (1 + wobble * np.sin(lobes * angle + phase))
    return (slice(y0, y1), slice(x0, x1)), inside


def sequence(frames: int, seed: int = 0, objects: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """bool[T, 720, 1280] GT of moving blobs and a prediction with jittered position, size and shape."""
    rng = np.random.default_rng(seed)
    start = rng.uniform([150, 200], [HEIGHT - 150, WIDTH - 200], size=(objects, 2))
    velocity = rng.normal(0, 2.5, size=(objects, 2))
    radius, wobble = rng.uniform(50, 140, objects), rng.uniform(0.05, 0.2, objects)
    lobes, phase = rng.integers(2, 7, objects), rng.uniform(0, 2 * np.pi, objects)
    gt = np.zeros((frames, HEIGHT, WIDTH), bool)
    pred = np.zeros_like(gt)
    for t in range(frames):
        for k in range(objects):
            center, turn = start[k] + velocity[k] * t, phase[k] + 0.05 * t
            window, inside = blob(HEIGHT, WIDTH, center, radius[k], wobble[k], lobes[k], turn)
            gt[t][window] |= inside
            center, scale = center + rng.normal(0, 4, 2), 1 + rng.normal(0, 0.05)
            window, inside = blob(
                HEIGHT, WIDTH, center, radius[k] * scale, wobble[k], lobes[k], turn + rng.normal(0, 0.2)
            )
            pred[t][window] |= inside
    return gt, pred


# ----------------------------------------------------------------------------- reference (DAVIS 2017)


def reference_bmap(seg: np.ndarray) -> np.ndarray:
    """One [H, W] frame: differs from the east, south or south-east neighbour; last row/column rules."""
    seg = seg.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1], south[:-1, :], south_east[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def reference_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """One [H, W] frame of the DAVIS boundary F: disk dilation with cv2, the empty-boundary cases."""
    radius = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fg_b, gt_b = reference_bmap(pred), reference_bmap(gt)
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


def reference_jf(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool[T, H, W] x2 -> (J float64[T], F float64[T]) as DAVIS computes them."""
    inter = np.sum(gt.astype(bool) & pred.astype(bool), axis=(-2, -1))
    union = np.sum(gt.astype(bool) | pred.astype(bool), axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[np.isclose(union, 0)] = 1
    f = np.array([reference_f(g, p) for g, p in zip(gt, pred, strict=True)], dtype=np.float64)
    return j, f


def vrsjax_jf(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return metrics.jaccard(gt, pred), metrics.boundary_f(gt, pred)


# ----------------------------------------------------------------------------- run and report


def timed(fn, *args) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def report(frames: int, repeats: int, ref_times: list[float], our_times: list[float], j, f) -> str:
    """The section body: the setup, the machine, and a table of best / median [spread] per implementation."""
    ref, ours, ref_median, our_median = min(ref_times), min(our_times), np.median(ref_times), np.median(our_times)
    versions = f"numpy {np.__version__}, opencv {cv2.__version__}, scikit-image {skimage.__version__}"
    load = f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    lines = [
        f"`benchmarks/metrics.py`: J and F of a {frames}-frame {WIDTH}x{HEIGHT} sequence (three moving, wobbling",
        "blobs; the prediction jitters their position, size and shape), `vrsjax.eval.metrics.jaccard` +",
        "`boundary_f` (all frames at once: bit-packed boundaries, disk matching by sorted-key search) against a",
        "reference written from the DAVIS 2017 definition in the benchmark (J over the stack as `db_eval_iou`,",
        "F per frame with `_seg2bmap`, `skimage.morphology.disk(12)` and `cv2.dilate`). Same process, alternating,",
        f"{repeats} repeats; J and F are asserted identical (`np.array_equal`).",
        "",
        f"Machine: {report_lib.machine()}{load}; {versions}.",
        "",
        f"| implementation | best (s) | {report_lib.spread_note(repeats)} (s) | per frame (ms, best) |",
        "| --- | --- | --- | --- |",
        f"| DAVIS reference (per-frame loop, cv2) | {ref:.3f} | {report_lib.fmt(ref_times)} "
        f"| {1e3 * ref / frames:.2f} |",
        f"| vrsjax (vectorized numpy) | {ours:.3f} | {report_lib.fmt(our_times)} | {1e3 * ours / frames:.2f} |",
        "",
        f"Speed-up: **{ref / ours:.1f}x** best over best ({ref_median / our_median:.1f}x median over median).",
        f"Mean J {j.mean():.4f}, mean F {f.mean():.4f}, identical in both.",
    ]
    return "\n".join(lines)


def measure(frames: int, repeats: int) -> str:
    """Time both implementations on the same masks, alternating; -> the section body."""
    gt, pred = sequence(frames)
    vrsjax_jf(gt[:2], pred[:2])  # warm-up
    ref_times, our_times = [], []
    for _ in progress_bar(range(repeats), desc="metrics repeats"):
        seconds, (j_ref, f_ref) = timed(reference_jf, gt, pred)
        ref_times.append(seconds)
        seconds, (j, f) = timed(vrsjax_jf, gt, pred)
        our_times.append(seconds)
        np.testing.assert_array_equal(j, j_ref)
        np.testing.assert_array_equal(f, f_ref)
    return report(frames, repeats, ref_times, our_times, j, f)


def run(quick: bool = False) -> str:
    """The suite's entry point: measure (10 frames, 3 repeats when quick), write the section, return its body."""
    body = measure(10, report_lib.repeats(3)) if quick else measure(100, report_lib.repeats(5))
    report_lib.write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update the '## Metrics' section of BENCHMARKS.md")
    args = parser.parse_args()
    body = measure(args.frames, args.repeats)
    print(body)
    if args.write:
        report_lib.write_section(TITLE, body)


if __name__ == "__main__":
    main()
