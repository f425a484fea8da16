"""Binary masks in the forms the benchmarks ship them: COCO RLE (ReVOS, MeViS), palette PNGs whose pixel value is
the object id (Ref-YouTube-VOS, Ref-DAVIS17) and 0/255 grayscale PNGs (ReasonVOS), plus the mask sources that
decode them lazily for one expression.

Decoding follows the reference loaders operation for operation: `pycocotools.mask.decode` of the RLE dict (a list
of RLEs decodes to [H, W, n] and is summed over the last axis, then cast to uint8), objects combined with a bitwise
OR on uint8 (Veason-R1, VISA training) or added (VISA's ReVOS evaluation), palette PNGs opened with
`Image.open(p).convert("P")` and compared with the object id, grayscale PNGs thresholded at > 0. Every RLE's
`size` is checked against the frame size before decoding, so a mismatch is an error, never a silently wrong mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from vrsjax.data.errors import DataError

COMBINE_MODES = ("union", "sum")


def check_rle(rle: Any, height: int, width: int) -> None:
    """Raise ValueError unless `rle` is a COCO RLE dict (or a list of them) of size [height, width]."""
    items = rle if isinstance(rle, list) else [rle]
    for item in items:
        if not isinstance(item, dict) or "size" not in item or "counts" not in item:
            raise ValueError(f"not a COCO RLE (a dict with 'size' and 'counts'): {str(item)[:80]!r}")
        size = [int(v) for v in item["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the frame size [{height}, {width}]")


def decode_rle(rle: Any) -> np.ndarray:
    """COCO RLE dict (compressed or uncompressed counts) or list of them -> uint8[H, W] (a list is summed)."""
    if isinstance(rle, list):
        rles = [_compressed(r) for r in rle]
        return mask_utils.decode(rles).sum(axis=2).astype(np.uint8)
    return mask_utils.decode(_compressed(rle)).astype(np.uint8)


def _compressed(rle: dict) -> dict:
    if isinstance(rle["counts"], list):  # uncompressed RLE, as some converters write it
        height, width = (int(v) for v in rle["size"])
        return mask_utils.frPyObjects(rle, height, width)
    return rle


def encode_rle(mask: np.ndarray) -> dict:
    """bool/uint8[H, W] -> the JSON form ReVOS stores: {"size": [H, W], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def combine(object_masks: np.ndarray, mode: str = "union") -> np.ndarray:
    """uint8[T, K, H, W] -> uint8[T, H, W]: bitwise OR of the objects ("union", Veason-R1) or their uint8 sum
    ("sum", VISA's ReVOS evaluation); zeros when K == 0."""
    if mode not in COMBINE_MODES:
        raise ValueError(f"combine mode must be one of {COMBINE_MODES}, got {mode!r}")
    out = np.zeros((object_masks.shape[0], *object_masks.shape[2:]), np.uint8)
    for k in range(object_masks.shape[1]):
        if mode == "union":
            out |= object_masks[:, k]
        else:
            out += object_masks[:, k]
    return out


def read_palette_png(path: str | Path, obj_id: int) -> np.ndarray:
    """uint8[H, W]: 1 where the palette PNG's pixel value equals obj_id (Ref-YouTube-VOS / DAVIS annotations)."""
    with Image.open(path) as image:
        return (np.asarray(image.convert("P")) == obj_id).astype(np.uint8)


def read_binary_png(path: str | Path) -> np.ndarray:
    """uint8[H, W]: 1 where the grayscale PNG is > 0 (ReasonVOS stores 0/255)."""
    with Image.open(path) as image:
        return (np.asarray(image.convert("L")) > 0).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class RleMasks:
    """Per-object RLE lists of one expression: rles[k][t] is an RLE dict or None (object absent at frame t).

    The dicts are shared with the loaded mask_dict.json (no copy); `where` names the file for error messages.
    """

    rles: tuple[tuple[Any, ...], ...]
    height: int
    width: int
    where: str = "mask_dict.json"

    def object_masks(self, frame_ids: Sequence[int]) -> np.ndarray:
        """uint8[len(frame_ids), K, H, W]."""
        out = np.zeros((len(frame_ids), len(self.rles), self.height, self.width), np.uint8)
        for k, per_frame in enumerate(self.rles):
            for i, t in enumerate(frame_ids):
                if per_frame[t] is not None:
                    out[i, k] = decode_rle(per_frame[t])
        return out


@dataclass(frozen=True, eq=False)
class PaletteMasks:
    """Palette PNG per frame (pixel value = object id); paths[t] is the PNG of frame t."""

    paths: tuple[str, ...]
    obj_ids: tuple[int, ...]
    height: int
    width: int

    def object_masks(self, frame_ids: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(frame_ids), len(self.obj_ids), self.height, self.width), np.uint8)
        for i, t in enumerate(frame_ids):
            with Image.open(self.paths[t]) as image:
                values = np.asarray(image.convert("P"))
            _check_shape(values, self.height, self.width, self.paths[t])
            for k, obj_id in enumerate(self.obj_ids):
                out[i, k] = values == obj_id
        return out


@dataclass(frozen=True, eq=False)
class BinaryPngMasks:
    """One object's 0/255 PNG per frame (ReasonVOS); paths[t] is the PNG of frame t."""

    paths: tuple[str, ...]
    height: int
    width: int

    def object_masks(self, frame_ids: Sequence[int]) -> np.ndarray:
        out = np.zeros((len(frame_ids), 1, self.height, self.width), np.uint8)
        for i, t in enumerate(frame_ids):
            mask = read_binary_png(self.paths[t])
            _check_shape(mask, self.height, self.width, self.paths[t])
            out[i, 0] = mask
        return out


@dataclass(frozen=True, eq=False)
class ArrayMasks:
    """Masks already in memory (image datasets with inline masks): uint8[T, K, H, W]."""

    masks: np.ndarray = field(repr=False)

    def object_masks(self, frame_ids: Sequence[int]) -> np.ndarray:
        return self.masks[np.asarray(frame_ids, dtype=np.int64)]


def _check_shape(mask: np.ndarray, height: int, width: int, path: str) -> None:
    if mask.shape != (height, width):
        raise DataError(
            f"annotation {path} is {mask.shape[0]}x{mask.shape[1]} but its frame is {height}x{width}; "
            "re-export the annotation at the frame resolution"
        )
