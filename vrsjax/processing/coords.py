"""Box and point coordinates between the original frame, the processor's resized frame and the square keyframe.

Qwen2.5-VL answers in the pixel coordinates of the image it was shown. Veason-R1 shows 560x560 frames (VisionReasoner
840x840), so answers map back to a W x H frame with `int(v * W / 560 + 0.5)` (x) and `int(v * H / 560 + 0.5)` (y),
and ground-truth boxes map forward as `v * 560 / W + 0.5` without rounding (the references' exact arithmetic).
`rescale` is the general map between any two frame sizes, e.g. an original frame and its `smart_resize` size.
Boxes are `[..., 4]` as (x1, y1, x2, y2); points `[..., 2]` as (x, y).
"""

from __future__ import annotations

import numpy as np


def _xy_factors(last_dim: int, fx: float, fy: float) -> np.ndarray:
    if last_dim not in (2, 4):
        raise ValueError(f"coordinates must end in 2 (x, y) or 4 (x1, y1, x2, y2) values, got {last_dim}")
    return np.array([fx, fy] * (last_dim // 2), np.float64)


def to_original(coords, width: int, height: int, size: int = 560) -> np.ndarray:
    """int64[..., 4 | 2]: coordinates in a size x size frame -> a width x height frame, `int(v * W / size + 0.5)`."""
    c = np.asarray(coords, np.float64)
    scaled = c * _xy_factors(c.shape[-1], width / size, height / size) + 0.5
    return np.trunc(scaled).astype(np.int64)  # int() truncates toward zero, also for negative values


def to_square(coords, width: int, height: int, size: int = 560) -> np.ndarray:
    """float64[..., 4 | 2]: a width x height frame -> a size x size frame, `v * size / W + 0.5` (Veason GT boxes)."""
    c = np.asarray(coords, np.float64)
    return c * _xy_factors(c.shape[-1], size / width, size / height) + 0.5


def rescale(coords, src_hw: tuple[int, int], dst_hw: tuple[int, int], round_half_up: bool = False) -> np.ndarray:
    """[..., 4 | 2] coordinates from a frame of `src_hw` = (H, W) to one of `dst_hw`; optionally `int(v + 0.5)`."""
    c = np.asarray(coords, np.float64)
    out = c * _xy_factors(c.shape[-1], dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0])
    return np.trunc(out + 0.5).astype(np.int64) if round_half_up else out


def mask_boxes(masks, size: int = 560) -> list[list[float]]:
    """Veason-R1 GT boxes of one frame: bool/uint8[O, H, W] object masks -> one box per object in the size x size
    frame (min/max mask pixel, `v * size / W + 0.5`), `[0, 0, 0, 0]` for an absent object, and a single
    `[[0, 0, 0, 0]]` when no object is present at all."""
    m = np.asarray(masks) > 0
    if m.ndim == 2:
        m = m[None]
    height, width = m.shape[1:]
    if not m.any():
        return [[0, 0, 0, 0]]
    boxes = []
    for obj in m:
        if not obj.any():
            boxes.append([0, 0, 0, 0])
            continue
        ys, xs = np.nonzero(obj)
        box = [xs.min(), ys.min(), xs.max(), ys.max()]
        boxes.append([float(v) for v in to_square(np.array(box, np.float64), width, height, size)])
    return boxes
