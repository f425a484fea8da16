"""TFDS builders that turn a dataset read by any vrsjax reader into random-access ArrayRecord files, once, with
no TensorFlow: `build_records(dataset, out_dir)`, then `open_records(out_dir)`.

Two builders write under out_dir: `vrsjax_frames` holds one record per video frame (the original JPEG bytes,
untouched, so decoding gives the same pixels as reading the file), in video order with shuffling disabled, so a
video's frames are contiguous; `vrsjax_expressions` holds one record per expression: its metadata, the record
index of its video's first frame, each object's RLE at every frame (the dataset's own RLE strings when it ships
them, else the PNG masks encoded with pycocotools), and the one thing a training sample needs from every frame,
precomputed: the union-mask area per frame, for Veason-R1's keyframe choice. A sample then decodes only its N
sampled frames and masks instead of every mask of the video. The expressions builder's metadata.json keeps a small
index (video, exp_id, type_id, objects, frames per record) and the build's skip report.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import tensorflow_datasets as tfds

from vrsjax.data import transforms as T
from vrsjax.data.errors import DataError, SkipLog, raise_or_skip
from vrsjax.data.masks import RleMasks, combine, decode_rle, encode_rle
from vrsjax.data.samples import ExpressionDataset, ExpressionSample

VERSION = "1.0.0"
FRAMES = "vrsjax_frames"
EXPRESSIONS = "vrsjax_expressions"


class VrsjaxFrames(tfds.core.GeneratorBasedBuilder):
    """One record per frame: {"video", "frame", "jpeg"} in dataset video order."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, source: ExpressionDataset | None = None, **kwargs: Any) -> None:
        self._source = source
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "video": tfds.features.Text(),
            "frame": tfds.features.Text(),
            "jpeg": tfds.features.Tensor(shape=(), dtype=np.object_),
        }
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=True
        )

    def _split_generators(self, dl_manager: Any) -> dict:
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        index = 0
        for sample in _first_per_video(self._source):
            for name, path in zip(sample.frame_names, sample.frame_paths, strict=True):
                with open(path, "rb") as f:
                    yield f"{index:012d}", {"video": sample.video, "frame": name, "jpeg": f.read()}
                index += 1


class VrsjaxExpressions(tfds.core.GeneratorBasedBuilder):
    """One record per expression; see the module docstring."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, source: ExpressionDataset | None = None, skip_bad_samples: bool = False, **kw: Any) -> None:
        self._source = source
        self._skip = skip_bad_samples
        super().__init__(**kw)

    def _info(self) -> tfds.core.DatasetInfo:
        text, ints = tfds.features.Text(), lambda dt: tfds.features.Tensor(shape=(None,), dtype=dt)
        features = {
            **{k: text for k in ("dataset", "video", "exp_id", "expression", "extra")},
            **{k: np.int32 for k in ("type_id", "height", "width", "num_frames", "num_objects")},
            "frame_start": np.int64,
            "has_masks": np.bool_,
            "frame_names": ints(np.object_),
            "obj_ids": ints(np.int64),
            "anno_ids": ints(np.object_),
            "areas": ints(np.int64),  # [T]
            "rle_counts": ints(np.object_),  # [K * T], b"" where the object is absent
        }
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: Any) -> dict:
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        starts = _frame_starts(self._source)
        skip_log = SkipLog(self._source.name)
        index: list[list] = []
        for sample in self._source:
            try:
                record = expression_record(sample, starts[sample.video])
            except (DataError, OSError, ValueError) as error:
                error = error if isinstance(error, DataError) else DataError(f"{sample.dataset} {sample.key}: {error}")
                raise_or_skip(error, skip_log if self._skip else None)
                continue
            yield f"{len(index):012d}", record
            index.append([sample.video, sample.exp_id, record["type_id"], record["num_objects"], sample.num_frames])
        skip_log.merge(self._source.skipped)
        self.info.metadata.update(
            {"index": index, "dataset": self._source.name, "split": self._source.split, "skipped": skip_log.report()}
        )


def _first_per_video(dataset: ExpressionDataset) -> Iterator[ExpressionSample]:
    seen: set[str] = set()
    for sample in dataset:
        if sample.video not in seen:
            seen.add(sample.video)
            yield sample


def _frame_starts(dataset: ExpressionDataset) -> dict[str, int]:
    starts, total = {}, 0
    for sample in _first_per_video(dataset):
        starts[sample.video] = total
        total += sample.num_frames
    return starts


def expression_record(sample: ExpressionSample, frame_start: int) -> dict[str, Any]:
    """The TFDS features of one expression. RLE datasets keep their RLE strings and get the per-frame union areas
    from pycocotools' merge/area without decoding; PNG masks are decoded once and encoded as RLE."""
    num_objects, num_frames = len(sample.obj_ids), sample.num_frames
    record = {
        "dataset": sample.dataset,
        "video": sample.video,
        "exp_id": sample.exp_id,
        "expression": sample.expression,
        "extra": json.dumps({k: v for k, v in sample.extra.items() if _jsonable(v)}),
        "type_id": -1 if sample.type_id is None else sample.type_id,
        "height": sample.height,
        "width": sample.width,
        "num_frames": num_frames,
        "num_objects": num_objects,
        "frame_start": frame_start,
        "has_masks": sample.has_masks,
        "frame_names": np.array([n.encode() for n in sample.frame_names], dtype=object),
        "obj_ids": np.array(sample.obj_ids, np.int64),
        "anno_ids": np.array([a.encode() for a in sample.anno_ids], dtype=object),
        "areas": np.zeros(0, np.int64),
        "rle_counts": np.array([], dtype=object),
    }
    if sample.masks is None:
        return record
    if _plain_rles(sample.masks):  # the dataset's own RLE strings, and areas without decoding any mask
        rles = sample.masks.rles
        record["num_objects"] = len(rles)
        record["areas"] = np.array([_union_area([r[t] for r in rles]) for t in range(num_frames)], np.int64)
        record["rle_counts"] = np.array(
            [b"" if r is None else r["counts"].encode() for per in rles for r in per], dtype=object
        )
        return record
    object_masks = sample.object_masks()  # PNG masks (and unusual RLEs): decode once, store as RLE
    record["num_objects"] = object_masks.shape[1]
    record["areas"] = T.union_areas(combine(object_masks))
    record["rle_counts"] = np.array(
        [
            encode_rle(m)["counts"].encode() if m.any() else b""
            for m in object_masks.transpose(1, 0, 2, 3).reshape(-1, *object_masks.shape[2:])
        ],
        dtype=object,
    )
    return record


def _plain_rles(masks: Any) -> bool:
    """RleMasks whose entries are all None or compressed-string RLE dicts (areas can be read off the RLEs)."""
    return isinstance(masks, RleMasks) and all(
        r is None or (isinstance(r, dict) and isinstance(r.get("counts"), str)) for per in masks.rles for r in per
    )


def _union_area(rles: list) -> int:
    """Pixels of the union of one frame's object RLEs (None = absent): what `(OR of decoded masks) > 0` counts."""
    present = [r for r in rles if r is not None]
    if not present:
        return 0
    merged = present[0] if len(present) == 1 else mask_utils.merge(present, intersect=False)
    return int(mask_utils.area(merged))


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def build_records(
    dataset: ExpressionDataset, out_dir: str | Path, *, overwrite: bool = False, skip_bad_samples: bool = False
) -> Path:
    """Write the frames and expressions ArrayRecord datasets of `dataset` under out_dir; returns out_dir.

    An existing complete build is reused unless overwrite, which removes the two builds' folders and nothing else
    of out_dir. Samples whose masks fail to decode raise, or with skip_bad_samples are counted in the metadata's skip
    report (with what the reader skipped).
    """
    out_dir = Path(out_dir)
    if overwrite:
        for builder in (VrsjaxFrames, VrsjaxExpressions):
            shutil.rmtree(out_dir / builder.name, ignore_errors=True)
    frames = VrsjaxFrames(source=dataset, data_dir=str(out_dir), file_format="array_record")
    frames.download_and_prepare()
    expressions = VrsjaxExpressions(
        source=dataset, skip_bad_samples=skip_bad_samples, data_dir=str(out_dir), file_format="array_record"
    )
    expressions.download_and_prepare()
    return out_dir


@dataclass
class Records:
    """An opened build: random-access `expressions` and `frames` (TFDS ArrayRecord data sources) and the index."""

    root: str
    expressions: Any
    frames: Any
    index: list[list]
    metadata: dict

    def __len__(self) -> int:
        return len(self.expressions)


def open_records(out_dir: str | Path) -> Records:
    """Open what build_records wrote (cheap: no record is read)."""
    out_dir = Path(out_dir)
    paths = [out_dir / name / VERSION for name in (EXPRESSIONS, FRAMES)]
    for path in paths:
        if not (path / "dataset_info.json").is_file():
            raise FileNotFoundError(f"no vrsjax records at {path}: run vrsjax.data.records.build_records first")
    exp_builder, frame_builder = (tfds.builder_from_directory(str(p)) for p in paths)
    metadata = dict(exp_builder.info.metadata or {})
    return Records(
        str(out_dir),
        exp_builder.as_data_source()["train"],
        frame_builder.as_data_source()["train"],
        metadata.get("index", []),
        metadata,
    )


def decode_frame(jpeg: bytes, size: int | None = None) -> np.ndarray:
    """uint8[H, W, 3] (or [size, size, 3], PIL bilinear) from JPEG bytes, the same pixels as reading the file."""
    from vrsjax.data.samples import read_frame

    return read_frame(io.BytesIO(jpeg), size)


def record_object_masks(record: dict, frame_ids: list[int]) -> np.ndarray:
    """uint8[N, K, H, W] of an expression record at frame_ids, decoding N * K RLEs."""
    height, width = int(record["height"]), int(record["width"])
    num_objects, num_frames = int(record["num_objects"]), int(record["num_frames"])
    counts = record["rle_counts"]
    out = np.zeros((len(frame_ids), num_objects, height, width), np.uint8)
    for k in range(num_objects):
        for i, t in enumerate(frame_ids):
            rle = counts[k * num_frames + t]
            if rle:
                out[i, k] = decode_rle({"size": [height, width], "counts": rle})
    return out
