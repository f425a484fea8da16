"""Index-time file checks shared by the readers: JSON that fails to parse, a missing or empty video folder, a
missing frame or annotation file, a frame whose size disagrees with the metadata. Each failure is a DataError
naming dataset, video, expression and file, raised before training starts instead of midway through an epoch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vrsjax.data.errors import data_error


def load_json(path: str | Path, dataset: str, what: str = "metadata") -> Any:
    """json.load with errors that name the file (and line/column of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise data_error(
            f"{what} file is missing",
            dataset=dataset,
            file=str(path),
            fix="point the reader at the dataset root as downloaded",
            reason="missing_file",
        )
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise data_error(
            f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
            dataset=dataset,
            file=str(path),
            fix="re-download or regenerate the file",
            reason="malformed_json",
        ) from e


def meta_videos(meta: Any, dataset: str, path: str | Path) -> dict:
    """The {"videos": {...}} mapping of a meta_expressions file, checked."""
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise data_error(
            'expected a JSON object {"videos": {<video>: {...}}}',
            dataset=dataset,
            file=str(path),
            reason="malformed_json",
        )
    return meta["videos"]


def frame_paths(
    folder: Path,
    names: Sequence[str],
    ext: str,
    dataset: str,
    video: str,
    check: bool = True,
    what: str = "frame",
    expression: str | None = None,
) -> tuple[str, ...]:
    """Paths folder/<name><ext>; with check, every file must exist (one listdir per video, not one stat per frame).

    what: "frame" or "annotation", for the message and the skip reason (missing_frame / missing_annotation).
    """
    paths = tuple(str(folder / f"{name}{ext}") for name in names)
    if not check:
        return paths
    if not names:
        raise data_error(
            "the video has no frames", dataset=dataset, video=video, file=str(folder), reason="empty_video"
        )
    try:
        present = set(os.listdir(folder))
    except FileNotFoundError:
        present = set()
    missing = [p for p, n in zip(paths, names, strict=True) if f"{n}{ext}" not in present]
    if missing:
        raise data_error(
            f"{len(missing)} of {len(paths)} {what} files are missing (first: {missing[0]})",
            dataset=dataset,
            video=video,
            expression=expression,
            file=missing[0],
            fix=f"restore the {what} files of this video from the dataset release",
            reason=f"missing_{what}",
        )
    return paths


def image_size(path: str, dataset: str, video: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError) as e:
        raise data_error(f"unreadable image: {e}", dataset=dataset, video=video, file=path, reason="bad_frame") from e


def video_size(
    first_frame: str, meta: dict, dataset: str, video: str, meta_file: str | Path | None = None
) -> tuple[int, int]:
    """(height, width) of the first frame; must agree with the metadata's height/width when those exist."""
    height, width = image_size(first_frame, dataset, video)
    if "height" in meta and "width" in meta and (int(meta["height"]), int(meta["width"])) != (height, width):
        raise data_error(
            f"metadata says {meta['height']}x{meta['width']} but the first frame is {height}x{width}",
            dataset=dataset,
            video=video,
            file=str(meta_file or first_frame),
            reason="size_mismatch",
        )
    return height, width
