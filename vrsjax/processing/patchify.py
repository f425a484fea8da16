"""Qwen2.5-VL image math: `smart_resize`, rescale + CLIP normalisation and the exact patch flattening.

`patchify(frames)` turns uint8 frames into `pixel_values [t*h*w, C*2*14*14]` and `grid_thw`, in the order the
vision tower expects (2x2 merge blocks contiguous). A single image is repeated to the temporal patch size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Both sides multiples of `factor`, area within [min_pixels, max_pixels], aspect ratio kept (HF rounding)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} of a {height}x{width} "
            f"image is over 200; crop or pad it first"
        )
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = (
            max(factor, math.floor(height / beta / factor) * factor),
            max(factor, math.floor(width / beta / factor) * factor),
        )
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def patchify(
    frames: np.ndarray,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8[T, H, W, 3] (or [H, W, 3]) -> (float32[t*h*w, 3*tp*p*p] pixel values, int64[3] grid (t, h, w))."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8[T, H, W, 3] with T >= 1, got shape {frames.shape}")
    height, width = smart_resize(frames.shape[1], frames.shape[2], patch_size * merge_size, min_pixels, max_pixels)
    if (height, width) != frames.shape[1:3]:
        frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames])
    x = (frames.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    x = x.transpose(0, 3, 1, 2)  # [T, C, H, W]
    if x.shape[0] % temporal_patch_size:
        pad = temporal_patch_size - x.shape[0] % temporal_patch_size
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    gt, gh, gw = x.shape[0] // temporal_patch_size, height // patch_size, width // patch_size
    c, p, m = x.shape[1], patch_size, merge_size
    x = x.reshape(gt, temporal_patch_size, c, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal_patch_size * p * p), np.array([gt, gh, gw], np.int64)
