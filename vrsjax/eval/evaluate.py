"""Benchmark protocols: score a folder of predicted PNG masks (`vrsjax.eval.layout`) against a dataset split read
by `vrsjax.data.open_dataset`, with the metrics of `vrsjax.eval.metrics`, and aggregate as each benchmark does.

Video benchmarks score each expression over all of its frames: J and F are per-frame means, x100. ReVOS follows
VISA's `tools/eval_revos.py`: the GT is the uint8 sum of the expression's objects, R uses the video's foreground
masks (mask_dict_foreground.json) and, like A, VISA's uint8 0/255 arithmetic by default (`r_convention="binary"`
for 0/1 masks); each expression's J, F, A, R are rounded to 2 decimals before averaging; referring = mean over
type 0, reasoning = mean over type 1, overall = their mean (J&F of a group = (J + F) / 2 of its means); type 2
(no target) is scored and listed but in no aggregate. MeViS (`eval_mevis.py`), Ref-DAVIS17 (VISA's
`eval_davis17.py`: per expression, all frames) and ReasonVOS (VideoLISA's `eval_reason_vos.py`) average J and F
over expressions; Ref-YouTube-VOS is the same protocol on a split with local ground truth (its valid split is
scored by the challenge server). Image reasoning segmentation reports gIoU and cIoU (x100, LISA's convention by
default). Where the reference scripts silently score a missing prediction 0 (VISA) or drop it (VideoLISA), a missing
prediction here scores 0 (an empty mask for gIoU/cIoU) and is listed in the report; a PNG of the wrong size or
an unreadable one is an error naming the file.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from vrsjax.data import open_dataset
from vrsjax.data.masks import combine
from vrsjax.data.samples import ExpressionDataset, ExpressionSample, MaskSource
from vrsjax.eval import layout, metrics
from vrsjax.progress import progress_bar

PROTOCOLS = ("revos", "mevis", "reasonvos", "refytvos", "davis17", "image")
REVOS_GROUPS = {"referring": 0, "reasoning": 1}
EVAL_SPLITS = {"revos": "valid", "mevis": "valid_u"}  # the annotated evaluation splits; others: the reader's default
SERVER_SPLITS = {"refytvos": "the Ref-YouTube-VOS challenge server", "mevis": "the MeViS CodaLab server"}


# ----------------------------------------------------------------------------- per expression


def score_video_expression(
    sample: ExpressionSample, pred_root: str | Path, with_robustness: bool, r_convention: str = "visa"
) -> dict[str, Any]:
    """One expression of a video benchmark -> its report row: J, F (and A, R) as fractions in [0, 1].

    A missing prediction gives 0 for every metric and `missing` set to the reason.
    """
    row = _row(sample)
    try:
        pred = read_prediction(sample, pred_root)
    except layout.MissingPrediction as missing:
        row.update({"J": 0.0, "F": 0.0, "missing": str(missing)})
        if with_robustness:
            row.update({"A": 0.0, "R": 0.0})
        return row
    gt = sample.union_masks(mode="sum")  # VISA adds the objects' masks; J and F only see gt != 0
    row["J"] = float(metrics.jaccard(gt, pred).mean())
    row["F"] = float(metrics.boundary_f(gt, pred).mean())
    if with_robustness:
        foreground = _foreground(sample)
        row["A"] = float(metrics.pixel_accuracy(gt, pred, convention=r_convention).mean())
        row["R"] = float(metrics.robustness(gt, pred, foreground, convention=r_convention).mean())
    return row


def score_image_expression(sample: ExpressionSample, pred_root: str | Path) -> dict[str, Any]:
    """One image sample -> its row with the intersection and union pixel counts of GT and prediction.

    A missing prediction counts as an empty mask (intersection 0, union = the GT's area).
    """
    row = _row(sample)
    gt = sample.union_masks()[0]
    try:
        pred = read_prediction(sample, pred_root)
    except layout.MissingPrediction as missing:
        pred = np.zeros((1, *gt.shape), bool)
        row["missing"] = str(missing)
    inter, union = metrics.intersection_union(gt, pred[0])
    row.update({"intersection": int(inter), "union": int(union)})
    return row


def read_prediction(sample: ExpressionSample, pred_root: str | Path) -> np.ndarray:
    """bool[T, H, W]: the sample's predicted masks, at the size of its frames (see `layout.read_masks`)."""
    return layout.read_masks(pred_root, sample.video, sample.exp_id, sample.frame_names, (sample.height, sample.width))


def _row(sample: ExpressionSample) -> dict[str, Any]:
    row: dict[str, Any] = {"video": sample.video, "exp_id": sample.exp_id, "expression": sample.expression}
    if sample.type_id is not None:
        row["type_id"] = sample.type_id
    row["num_frames"] = sample.num_frames
    row["missing"] = None
    return row


def _foreground(sample: ExpressionSample) -> np.ndarray:
    source = sample.extra.get("foreground")
    if source is None:
        raise ValueError(
            f"{sample.dataset} {sample.key}: no foreground masks for R; read ReVOS with with_foreground=True "
            "(needs mask_dict_foreground.json next to mask_dict.json)"
        )
    return _video_foreground(source, sample.num_frames)


@functools.lru_cache(maxsize=4)
def _video_foreground(source: MaskSource, num_frames: int) -> np.ndarray:
    """uint8[T, H, W], decoded once per video: the reader shares one foreground source among its expressions."""
    foreground = combine(source.object_masks(range(num_frames)), "sum")
    foreground.flags.writeable = False
    return foreground


# ----------------------------------------------------------------------------- aggregates


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _half_sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2


def revos_aggregates(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """VISA's ReVOS table: per-expression values x100 rounded to 2 decimals, then means per type and overall."""
    groups = {}
    for name, type_id in REVOS_GROUPS.items():
        members = [r for r in rows if r.get("type_id") == type_id]
        group = {k: _mean([round(100 * r[k], 2) for r in members]) for k in ("J", "F", "A", "R")}
        group["J&F"] = _half_sum(group["J"], group["F"])
        group["count"] = len(members)
        groups[name] = group
    ref, rea = groups["referring"], groups["reasoning"]
    overall = {k: _half_sum(ref[k], rea[k]) for k in ("J", "F", "A", "R", "J&F")}
    overall["count"] = ref["count"] + rea["count"]
    groups["overall"] = overall
    return groups


def mean_aggregates(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """MeViS / Ref-YouTube-VOS / Ref-DAVIS17 / ReasonVOS: 100 x mean J, mean F over expressions, J&F their mean."""
    j, f = _mean([r["J"] for r in rows]), _mean([r["F"] for r in rows])
    j, f = (None if v is None else 100 * v for v in (j, f))
    return {"all": {"J": j, "F": f, "J&F": _half_sum(j, f), "count": len(rows)}}


def image_aggregates(rows: Sequence[dict[str, Any]], convention: str = "lisa") -> dict[str, dict[str, float | None]]:
    """gIoU and cIoU x100 from the rows' intersection and union counts."""
    if not rows:
        return {"all": {"gIoU": None, "cIoU": None, "count": 0}}
    inter = np.array([r["intersection"] for r in rows], np.float64)
    union = np.array([r["union"] for r in rows], np.float64)
    return {
        "all": {
            "gIoU": 100 * metrics.giou(inter, union, convention),
            "cIoU": 100 * metrics.ciou(inter, union, convention),
            "count": len(rows),
        }
    }


# ----------------------------------------------------------------------------- the whole split


def evaluate(
    dataset: str,
    data_root: str | Path,
    pred_root: str | Path,
    split: str | None = None,
    *,
    r_convention: str = "visa",
    iou_convention: str = "lisa",
    workers: int | None = None,
    progress: bool = True,
    data: ExpressionDataset | None = None,
) -> dict[str, Any]:
    """Score the predictions under pred_root on one benchmark split; returns the report (see `write_report`).

    dataset: one of PROTOCOLS; data_root: the dataset folder (for "image", the .json/.jsonl file); split: when None,
    ReVOS valid, MeViS valid_u, else the reader's default; data: an already-read split to score instead.
    """
    if dataset not in PROTOCOLS:
        raise ValueError(f"unknown benchmark {dataset!r}; one of {PROTOCOLS}")
    if r_convention not in ("visa", "binary"):
        raise ValueError(f"r_convention must be 'visa' or 'binary'; got {r_convention!r}")
    if not Path(pred_root).is_dir():
        raise FileNotFoundError(f"prediction folder {pred_root} does not exist; run `vrsjax predict` first")
    data = data if data is not None else _read(dataset, data_root, split)
    samples = list(data)
    _check_ground_truth(dataset, data, samples)
    if dataset == "image":
        score = functools.partial(score_image_expression, pred_root=pred_root)
    else:
        score = functools.partial(
            score_video_expression, pred_root=pred_root, with_robustness=dataset == "revos", r_convention=r_convention
        )
    try:
        rows = _map(score, samples, workers, progress, f"eval {dataset}/{data.split}")
    finally:
        _video_foreground.cache_clear()
    return _report(dataset, data, pred_root, rows, r_convention, iou_convention)


def _read(dataset: str, data_root: str | Path, split: str | None) -> ExpressionDataset:
    if dataset == "image":
        return open_dataset("image_json", data_root)
    split = split or EVAL_SPLITS.get(dataset)
    if dataset == "revos":
        return open_dataset("revos", data_root, split, with_foreground=True)
    return open_dataset(dataset, data_root, split)


def _check_ground_truth(dataset: str, data: ExpressionDataset, samples: list[ExpressionSample]) -> None:
    without = [s for s in samples if not s.has_masks]
    if without:
        where = SERVER_SPLITS.get(dataset, "its benchmark's server")
        raise ValueError(
            f"{dataset}/{data.split} at {data.root}: {len(without)} of {len(samples)} expressions (first: "
            f"{without[0].key}) have no ground-truth masks, so this split is scored by {where}; evaluate locally "
            "on a split with annotations, or zip the prediction folder for the server"
        )


def _map(score, samples: list[ExpressionSample], workers: int | None, progress: bool, desc: str) -> list[dict]:  # noqa: ANN001
    """score(sample) for every sample, in order, on a thread pool (PNG decoding and numpy release the GIL)."""
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    with progress_bar(total=len(samples), desc=desc, unit="exp", disable=not progress) as bar:
        if workers <= 1:
            rows = []
            for sample in samples:
                rows.append(score(sample))
                bar.update()
            return rows
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(score, s) for s in samples]
            for future in as_completed(futures):
                future.result()  # the first error (a bad PNG) stops the run
                bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [future.result() for future in futures]


def _report(dataset, data, pred_root, rows, r_convention, iou_convention) -> dict[str, Any]:  # noqa: ANN001
    if dataset == "revos":
        scored = [r for r in rows if r.get("type_id") in REVOS_GROUPS.values()]
        aggregates = revos_aggregates(scored)
    elif dataset == "image":
        aggregates = image_aggregates(rows, iou_convention)
    else:
        aggregates = mean_aggregates(rows)
    missing = [{"video": r["video"], "exp_id": r["exp_id"], "reason": r["missing"]} for r in rows if r["missing"]]
    excluded = [r for r in rows if dataset == "revos" and r.get("type_id") not in REVOS_GROUPS.values()]
    return {
        "dataset": dataset,
        "split": data.split,
        "data": str(data.root),
        "pred": str(pred_root),
        "settings": {"r_convention": r_convention if dataset == "revos" else None, "iou_convention": iou_convention},
        "aggregates": aggregates,
        "counts": {
            "expressions": len(rows),
            "scored": len(rows) - len(excluded),
            "missing": len(missing),
            "excluded_no_target": len(excluded),
            "skipped_by_reader": data.skipped.total,
        },
        "missing": missing,
        "rows": rows,
    }


# ----------------------------------------------------------------------------- output


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report as JSON (rows, aggregates, missing list, counts); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return path


def format_table(report: dict[str, Any]) -> str:
    """The aggregates as a fixed-width text table, with the counts and the first missing predictions."""
    aggregates = report["aggregates"]
    columns = [c for c in ("J&F", "J", "F", "R", "A", "gIoU", "cIoU") if any(c in g for g in aggregates.values())]
    lines = [f"{report['dataset']}/{report['split']}  predictions: {report['pred']}"]
    lines.append(f"{'group':<10} {'count':>6} " + " ".join(f"{c:>7}" for c in columns))
    for name, group in aggregates.items():
        cells = " ".join("    n/a" if group.get(c) is None else f"{group[c]:7.2f}" for c in columns)
        lines.append(f"{name:<10} {group['count']:>6} {cells}")
    counts = report["counts"]
    lines.append(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    for item in report["missing"][:10]:
        lines.append(f"  missing (scored 0): {item['video']}/{item['exp_id']}")
    if counts["missing"] > 10:
        lines.append(f"  ... and {counts['missing'] - 10} more (see the JSON report)")
    return "\n".join(lines)


def run(
    dataset: str,
    data_root: str | Path,
    pred_root: str | Path,
    out: str | Path | None,
    split: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`vrsjax eval`: evaluate, write the JSON report to out (when given), print the table; returns the report."""
    report = evaluate(dataset, data_root, pred_root, split, **options)
    if out:
        write_report(report, out)
    print(format_table(report))
    if out:
        print(f"report: {out}")
    return report
