"""Reader for image reasoning/referring segmentation data (refCOCO(+/g), ReasonSeg) as JSON records, read into the
same `ExpressionSample` interface as one-frame videos, for VisionReasoner-style training and evaluation.

A file is a JSON list or JSON Lines of records with the column names of Seg-Zero / VisionReasoner's Hugging Face
datasets: "image" (path relative to image_root), the query in "text" (evaluation sets) or "problem" (training sets;
also "expression"/"sentence"), optional "image_id", "ann_id", "img_height", "img_width", "bbox" ([x1, y1, x2, y2]
in image pixels, or a list of them, one per object), "solution" (VisionReasoner targets, a JSON string or list of
{"bbox_2d", "point_2d"} in the 840x840 space) and "mask": a COCO RLE dict, a list of RLE dicts (one per object),
a PNG path (> 0 is foreground) or a 2-D 0/1 list (how VisionReasoner's evaluation sets store it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.files import image_size, load_json
from vrsjax.data.masks import ArrayMasks, BinaryPngMasks, RleMasks, check_rle
from vrsjax.data.samples import ExpressionDataset, ExpressionSample

TEXT_KEYS = ("text", "problem", "expression", "sentence")


def read_image_json(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    name: str = "image_json",
    skip_bad_samples: bool = False,
    check_files: bool = True,
) -> ExpressionDataset:
    """Records of a .json (list) or .jsonl file; images resolve against image_root (default: the file's folder).

    Each image's header is read for its size (checked against img_height/img_width when given); check_files
    also reports a missing image as such rather than as unreadable."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    records = _load_records(path, name)
    skip_log = SkipLog(f"{name}/{path.stem}")
    samples = []
    for index, record in enumerate(records):
        try:
            samples.append(_sample(name, path, root, index, record, check_files))
        except DataError as error:
            raise_or_skip(error, skip_log if skip_bad_samples else None)
    return ExpressionDataset(name, str(root), path.stem, tuple(samples), skip_log)


def _load_records(path: Path, name: str) -> list:
    if path.suffix != ".jsonl":
        records = load_json(path, name)
        if not isinstance(records, list):
            raise data_error("expected a JSON list of records", dataset=name, file=str(path), reason="malformed_json")
        return records
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise data_error(
                        f"malformed JSON on line {line_no}: {e.msg}",
                        dataset=name,
                        file=str(path),
                        reason="malformed_json",
                    ) from e
    return records


def _sample(name: str, path: Path, root: Path, index: int, record: Any, check_files: bool) -> ExpressionSample:
    video = str(record.get("image_id", index)) if isinstance(record, dict) else str(index)
    exp_id = str(record.get("ann_id", index)) if isinstance(record, dict) else str(index)
    where = dict(dataset=name, video=video, expression=exp_id, file=str(path))
    if not isinstance(record, dict) or "image" not in record:
        raise data_error(f"record {index} has no 'image'", **where, reason="malformed_json")
    text = next((record[k] for k in TEXT_KEYS if k in record), None)
    if text is None:
        raise data_error(f"record {index} has none of the text keys {TEXT_KEYS}", **where, reason="malformed_json")
    image = str(root / record["image"])
    if check_files and not Path(image).is_file():
        raise data_error("image file is missing", **{**where, "file": image}, reason="missing_frame")
    height, width = image_size(image, name, video)  # the header only
    if "img_height" in record and (int(record["img_height"]), int(record["img_width"])) != (height, width):
        raise data_error(
            f"img_height/img_width say {record['img_height']}x{record['img_width']} but the image is {height}x{width}",
            **where,
            reason="size_mismatch",
        )
    masks = _masks(record.get("mask"), root, height, width, where)
    extra = {"bbox": record.get("bbox"), "solution": _solution(record.get("solution"), where)}
    return ExpressionSample(
        dataset=name,
        video=video,
        exp_id=exp_id,
        expression=str(text),
        frame_names=(Path(image).stem,),
        frame_paths=(image,),
        obj_ids=tuple(range(_num_objects(record, masks))),
        anno_ids=(),
        type_id=None,
        height=height,
        width=width,
        masks=masks,
        extra=extra,
    )


def _masks(mask: Any, root: Path, height: int, width: int, where: dict):
    if mask is None:
        return None
    if isinstance(mask, str):
        return BinaryPngMasks((str(root / mask),), height, width)
    if isinstance(mask, dict) or (isinstance(mask, list) and mask and isinstance(mask[0], dict)):
        rles = mask if isinstance(mask, list) else [mask]
        try:
            for rle in rles:
                check_rle(rle, height, width)
        except ValueError as e:
            raise data_error(str(e), **where, reason="rle_size") from e
        return RleMasks(tuple((rle,) for rle in rles), height, width, where["file"])
    array = np.asarray(mask, dtype=np.uint8)
    if array.shape != (height, width):
        raise data_error(
            f"inline mask is {array.shape} but the image is {height}x{width}", **where, reason="size_mismatch"
        )
    return ArrayMasks(array[None, None])


def _solution(solution: Any, where: dict) -> list | None:
    if solution is None or isinstance(solution, list):
        return solution
    try:
        return json.loads(solution)
    except (TypeError, json.JSONDecodeError) as e:
        raise data_error(f"'solution' is not JSON: {str(solution)[:60]!r}", **where, reason="malformed_json") from e


def _num_objects(record: dict, masks) -> int:  # noqa: ANN001
    if isinstance(masks, RleMasks):
        return len(masks.rles)
    if masks is not None:
        return 1
    boxes = record.get("bbox")
    return len(boxes) if isinstance(boxes, list) and boxes and isinstance(boxes[0], list) else int(boxes is not None)
