"""`vrsjax data inspect`: counts and per-type statistics of a dataset split, and a PNG grid of a few expressions'
frames (Veason-R1 inference sampling) with their ground-truth masks outlined in white and the rest dimmed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from vrsjax.data import transforms as T
from vrsjax.data.samples import TYPE_NAMES, ExpressionDataset

TILE = 160


def statistics(dataset: ExpressionDataset) -> dict[str, Any]:
    """Counts: videos, expressions, frames; expressions per type and per object count; frames per video."""
    frames = {s.video: s.num_frames for s in dataset}
    per_type = Counter(TYPE_NAMES.get(s.type_id, "untyped") if s.type_id is not None else "untyped" for s in dataset)
    objects = Counter("none" if not s.obj_ids else "single" if len(s.obj_ids) == 1 else "multi" for s in dataset)
    lengths = np.array(list(frames.values()) or [0])
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "videos": len(frames),
        "expressions": len(dataset),
        "frames": int(lengths.sum()),
        "frames_per_video": {
            "min": int(lengths.min()),
            "mean": round(float(lengths.mean()), 2),
            "max": int(lengths.max()),
        },
        "by_type": dict(sorted(per_type.items())),
        "by_objects": dict(sorted(objects.items())),
        "with_masks": sum(s.has_masks for s in dataset),
        "skipped": dataset.skipped.total,
    }


def format_statistics(stats: dict[str, Any]) -> str:
    lines = [
        f"{stats['dataset']}/{stats['split']}: {stats['videos']} videos, {stats['expressions']} expressions, "
        f"{stats['frames']} frames (per video {stats['frames_per_video']})"
    ]
    lines.append("by type: " + ", ".join(f"{k} {v}" for k, v in stats["by_type"].items()))
    lines.append("by objects: " + ", ".join(f"{k} {v}" for k, v in stats["by_objects"].items()))
    lines.append(f"with masks: {stats['with_masks']}; skipped: {stats['skipped']}")
    return "\n".join(lines)


def grid(dataset: ExpressionDataset, path: str | Path, num_expressions: int = 4, num_frames: int = 6) -> Path:
    """Write a PNG: one row per expression (spread over the dataset), num_frames tiles with their masks shown."""
    picks = np.linspace(0, len(dataset) - 1, num=min(num_expressions, len(dataset)), dtype=int) if len(dataset) else []
    rows = [_row(dataset[int(i)], num_frames) for i in picks]
    canvas = Image.new("RGB", (TILE * num_frames, max(1, len(rows)) * (TILE + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, tiles) in enumerate(rows):
        draw.text((2, r * (TILE + 16) + 2), label[: 8 * num_frames * 2], fill=(0, 0, 0))
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (c * TILE, r * (TILE + 16) + 16))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _row(sample, num_frames: int) -> tuple[str, list[np.ndarray]]:  # noqa: ANN001
    frame_ids = T.inference_frame_ids(sample.num_frames, num_frames)
    frames = sample.read_frames(frame_ids, TILE).astype(np.float32)
    if sample.has_masks:  # dim everything outside the masks, outline them in white
        masks = T.resize_masks_nearest(sample.union_masks(frame_ids), TILE) > 0
        frames[~masks] *= 0.35
        frames[masks & ~ndimage.binary_erosion(masks, np.ones((1, 3, 3), bool))] = 255.0
    kind = TYPE_NAMES.get(sample.type_id, "") if sample.type_id is not None else ""
    label = f"{sample.video}/{sample.exp_id} [{kind}] {sample.expression}"
    return label, [f.astype(np.uint8) for f in frames]


def inspect_dataset(
    root: str | Path,
    format: str | None = None,
    split: str | None = None,
    png: str | Path | None = None,
    num_expressions: int = 4,
) -> dict[str, Any]:
    """Statistics of a dataset split, and the PNG grid when png is given (its path is returned under "png")."""
    from vrsjax.data.formats import open_dataset

    dataset = open_dataset(format, root, split, skip_bad_samples=True)
    stats = statistics(dataset)
    stats["skip_report"] = dataset.skipped.report()
    if png is not None:
        stats["png"] = str(grid(dataset, png, num_expressions))
    return stats
