"""The folder layout of predicted masks, shared by `vrsjax predict` (writer) and `vrsjax eval` (reader).

Every benchmark here stores one folder per expression, `<root>/<video>/<exp_id>/<frame>.png`, with one 0/255
uint8 grayscale PNG per frame of the video at its original size: VISA's ReVOS evaluation, MeViS's
`eval_mevis.py` and VideoLISA's ReasonVOS evaluation read exactly that, and the Ref-YouTube-VOS server expects it
under `Annotations/` of the zip (pass `<root>/Annotations` as root to produce a submission). Ref-DAVIS17 is
scored per expression from the same layout (ReferFormer's per-annotator palette PNGs are not used). ReVOS video
ids contain slashes ("UVO/all/-fbscFfkh4M"), which become nested folders as they do in VISA's output.

An expression is written into a hidden sibling folder and renamed into place only when all its frames are on
disk, so an interrupted run never leaves a partial folder under the final name; `is_complete` then only needs
every frame's file to exist. Reading takes any PNG mode to grayscale as the reference evaluations' `cv2.imread(p,
IMREAD_GRAYSCALE)` does (palette and RGB PNGs by the luma of their colours); nonzero is foreground.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vrsjax.errors import UserError


class MissingPrediction(UserError, FileNotFoundError):
    """A predicted mask file (or a whole expression folder) does not exist."""


class BadPrediction(UserError, ValueError):
    """A predicted mask file exists but is unreadable or has the wrong size; the message names the file."""


def prediction_dir(root: str | Path, video_id: str, expression_id: str) -> Path:
    """root/video_id/expression_id: the folder of one expression's per-frame PNGs."""
    video_id, expression_id = str(video_id), str(expression_id)
    for name, value in (("video_id", video_id), ("expression_id", expression_id)):
        parts = Path(value).parts
        if not value or Path(value).is_absolute() or ".." in parts:
            raise ValueError(f"{name} {value!r} is not a relative folder name; it would leave the prediction root")
    return Path(root) / video_id / expression_id


def _frame_file(folder: Path, frame_name: str) -> Path:
    return folder / f"{frame_name}.png"


def write_masks(
    root: str | Path, video_id: str, expression_id: str, frame_names: Sequence[str], masks: np.ndarray
) -> Path:
    """Write bool[T, H, W] (nonzero = foreground) as T uint8 0/255 PNGs `<frame_name>.png`; returns the folder.

    The frames go to a temporary sibling folder that is renamed into place at the end, replacing an older
    prediction of the same expression.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) != len(frame_names):
        raise ValueError(
            f"{video_id}/{expression_id}: masks must be [T, H, W] with T = {len(frame_names)} frame names; "
            f"got shape {masks.shape}"
        )
    if len(set(frame_names)) != len(frame_names):
        raise ValueError(f"{video_id}/{expression_id}: frame names repeat; each frame needs its own PNG")
    final = prediction_dir(root, video_id, expression_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        pixels = (masks != 0).astype(np.uint8) * np.uint8(255)
        for name, frame in zip(frame_names, pixels, strict=True):
            Image.fromarray(frame).save(_frame_file(temp, name))
        if final.exists():
            # A rename cannot replace a non-empty folder; the old one goes first (a crash here leaves none,
            # which reads as "not done", never as a half-written "done").
            shutil.rmtree(final)
        os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def is_complete(root: str | Path, video_id: str, expression_id: str, frame_names: Sequence[str]) -> bool:
    """True when the expression's folder holds a PNG for every frame name (resumable prediction skips it)."""
    folder = prediction_dir(root, video_id, expression_id)
    return folder.is_dir() and all(_frame_file(folder, name).is_file() for name in frame_names)


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """One predicted PNG -> bool[H, W] (nonzero = foreground); size = (H, W) expected."""
    path = Path(path)
    if not path.is_file():
        raise MissingPrediction(f"predicted mask {path} does not exist; run `vrsjax predict` for this expression")
    try:
        with Image.open(path) as image:
            image.load()
            # cv2.imread(path, IMREAD_GRAYSCALE), as the reference evaluations read masks: luma of the colour
            array = np.asarray(image if image.mode in ("1", "L") else image.convert("L"))
    except (OSError, ValueError) as error:
        raise BadPrediction(f"predicted mask {path} is not a readable PNG ({error}); rewrite it") from error
    if array.shape != tuple(size):
        raise BadPrediction(
            f"predicted mask {path} is {array.shape[0]}x{array.shape[1]} (HxW) but the video frames are "
            f"{size[0]}x{size[1]}; masks must be written at the original frame size"
        )
    return array != 0


def read_masks(
    root: str | Path, video_id: str, expression_id: str, frame_names: Sequence[str], size: tuple[int, int]
) -> np.ndarray:
    """bool[T, H, W] from `<root>/<video_id>/<expression_id>/<frame>.png`; size = (H, W) of the video.

    Raises MissingPrediction when the folder or a frame's PNG is missing, BadPrediction (naming the file)
    when a PNG is unreadable or of another size.
    """
    folder = prediction_dir(root, video_id, expression_id)
    if not folder.is_dir():
        raise MissingPrediction(f"no prediction folder {folder} for video {video_id!r}, expression {expression_id!r}")
    height, width = size
    out = np.empty((len(frame_names), height, width), dtype=bool)
    for t, name in enumerate(frame_names):
        out[t] = read_mask(_frame_file(folder, name), size)
    return out
