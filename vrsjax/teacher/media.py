"""Frames as a teacher sees them: ground-truth boxes drawn in red, a downscale to fit a bounding size, JPEG base64
data URLs in OpenAI `image_url` parts, each preceded by its timestamp caption.

Veason-R1's `seed_cot_generation.py` draws each object's box (min/max of its mask pixels, 2 px, red) on the full
resolution frame, then shrinks the frame to fit 640x480 (480x640 for portrait frames) keeping its aspect ratio,
never enlarging, and sends it as a JPEG data URL after a text part with its timestamp. We do the same with PIL.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

FIT = (640, 480)  # (width, height) for landscape frames; swapped for portrait ones
RED = (255, 0, 0)


def draw_boxes(frame: np.ndarray, extents: np.ndarray, width: int = 2) -> np.ndarray:
    """uint8[H, W, 3], int[K, 4] (left, top, right, bottom; -1 when absent) -> a copy with the present boxes drawn."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    draw = ImageDraw.Draw(image)
    for left, top, right, bottom in np.asarray(extents).reshape(-1, 4):
        if left >= 0:
            draw.rectangle([int(left), int(top), int(right), int(bottom)], outline=RED, width=width)
    return np.asarray(image)


def fit_size(width: int, height: int, fit: tuple[int, int] = FIT) -> tuple[int, int]:
    """(W, H) -> the size that fits within fit (orientation-aware), aspect kept, never larger than the input."""
    target_w, target_h = (max(fit), min(fit)) if height < width else (min(fit), max(fit))
    if height <= target_h and width <= target_w:
        return width, height
    if height / target_h < width / target_w:
        return target_w, int(height * target_w / width)
    return int(width * target_h / height), target_h


def data_url(frame: np.ndarray, fit: tuple[int, int] = FIT, quality: int = 90) -> str:
    """uint8[H, W, 3] -> `data:image/jpeg;base64,...` of the frame shrunk to fit."""
    image = Image.fromarray(np.asarray(frame, np.uint8))
    size = fit_size(image.width, image.height, fit)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def timestamped_parts(frames: Sequence[np.ndarray], timestamps: Sequence[int], fit: tuple[int, int] = FIT) -> list:
    """OpenAI content parts: for each frame a text part `[t s]` then its image_url part."""
    parts = []
    for frame, t in zip(frames, timestamps, strict=True):
        parts.append({"type": "text", "text": f"[{int(t)} s]"})
        parts.append({"type": "image_url", "image_url": {"url": data_url(frame, fit)}})
    return parts
