"""Qwen2.5-VL pixel math: `smart_resize`, the exact rescale + CLIP normalisation, and the patch flattening.

Frames stay uint8 until the very end: they are resized (see `resize.py`), cut into patches as bytes, and only then
turned into float32. What transformers computes for each byte value is written down as a 256-entry table per
channel (`normalize_table`): the PIL image processor rescales in float64 (`v * (1/255)`), casts to float32 and
normalises in float32; the torchvision processors (videos, fast images) fold the rescale into mean and std
(`mean * 255`, `std * 255` in float32) and normalise the float32 value. `normalize_plan` finds float32 steps that
reproduce that table on all 256 values (then a few vector ops run; else the table is gathered), so the result is
bit-identical either way. Patch rows are `[C, temporal_patch, patch, patch]` flattened, rows in (t, h-block,
w-block, h-in-block, w-in-block) order, so each 2x2 merge block is contiguous; a frame count that is not a multiple
of the temporal patch repeats the last frame (a single image becomes two identical frames).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from vrsjax.processing.resize import BICUBIC, resize_pil, resize_torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_RATIO = 200


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Both sides multiples of `factor`, area within [min_pixels, max_pixels], aspect ratio kept (HF rounding)."""
    if min(height, width) <= 0:
        raise ValueError(f"cannot resize a {height}x{width} image: both sides must be positive")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} of a {height}x{width} image is over "
            f"{MAX_RATIO} (the Qwen2.5-VL limit); crop or pad it first"
        )
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@functools.lru_cache(maxsize=16)
def normalize_table(
    backend: str = "pil",
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    rescale_factor: float = 1 / 255,
    do_rescale: bool = True,
    do_normalize: bool = True,
) -> np.ndarray:
    """float32[C, 256]: the processor's output for each uint8 value of each channel (the definition)."""
    v = np.arange(256, dtype=np.float64)
    m, s = np.asarray(mean, np.float32)[:, None], np.asarray(std, np.float32)[:, None]
    if backend == "pil":  # image_transforms.rescale (float64 product, float32 cast), then normalize in float32
        x = (v * rescale_factor).astype(np.float32) if do_rescale else v.astype(np.float32)
        x = (x[None] - m) / s if do_normalize else np.broadcast_to(x, (len(mean), 256))
    elif backend == "torch":  # TorchvisionBackend.rescale_and_normalize: rescale fused into mean and std
        x = v.astype(np.float32)[None]
        if do_normalize:
            if do_rescale:
                m, s = m * np.float32(1.0 / rescale_factor), s * np.float32(1.0 / rescale_factor)
            x = (x - m) / s
        elif do_rescale:
            x = np.broadcast_to(x * np.float32(rescale_factor), (len(mean), 256))
    else:
        raise ValueError(f"backend must be 'pil' or 'torch', got {backend!r}")
    return np.ascontiguousarray(x, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def normalize_plan(
    backend: str = "pil",
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    rescale_factor: float = 1 / 255,
    do_rescale: bool = True,
    do_normalize: bool = True,
) -> tuple[np.ndarray, tuple | None]:
    """(table, arithmetic): float32 `x / d`, `x - m`, `x / s` steps that reproduce the table on all 256 values of
    every channel (then used: a few vector ops beat a gather), or None (then the table is gathered)."""
    table = normalize_table(backend, mean, std, rescale_factor, do_rescale, do_normalize)
    if not do_normalize:
        return table, None
    m, s = np.asarray(mean, np.float32)[:, None], np.asarray(std, np.float32)[:, None]
    divisor = np.float32(1.0 / rescale_factor) if do_rescale else None
    if backend == "torch" and divisor is not None:
        m, s, divisor = m * divisor, s * divisor, None
    x = np.arange(256, dtype=np.float32)[None]
    x = x / divisor if divisor is not None else x
    steps = (divisor, m, s)
    return table, (steps if np.array_equal((x - m) / s, table) else None)


def patchify_uint8(
    frames: np.ndarray, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2, layout: str = "thwc"
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 frames whose axes are named by `layout` (a permutation of 'thwc', e.g. 'thwc' = [T, H, W, C])
    -> (uint8[t*h*w, C, tp*p*p] patches, (t, h, w) grid)."""
    axis = {name: i for i, name in enumerate(layout)}
    t = frames.shape[axis["t"]]
    if t % temporal_patch_size:  # repeat the last frame, as the processors do
        last = np.take(frames, [t - 1] * (temporal_patch_size - t % temporal_patch_size), axis=axis["t"])
        frames = np.concatenate([frames, last], axis=axis["t"])
    p, m, tp = patch_size, merge_size, temporal_patch_size
    sizes = dict(zip(layout, frames.shape, strict=True))
    split = {"t": (sizes["t"] // tp, tp), "h": (sizes["h"] // p // m, m, p), "w": (sizes["w"] // p // m, m, p)}
    split["c"] = (sizes["c"],)
    names = {"t": ("gt", "tp"), "h": ("gh", "mh", "ph"), "w": ("gw", "mw", "pw"), "c": ("c",)}
    order = [sub for name in layout for sub in names[name]]
    target = ("gt", "gh", "gw", "mh", "mw", "c", "tp", "ph", "pw")
    x = frames.reshape([n for name in layout for n in split[name]]).transpose([order.index(n) for n in target])
    gt, gh, gw = split["t"][0], split["h"][0] * m, split["w"][0] * m
    return np.ascontiguousarray(x).reshape(gt * gh * gw, sizes["c"], tp * p * p), (gt, gh, gw)


def normalize_patches(patches: np.ndarray, plan: tuple, repeat: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """uint8[N, C, K] -> float32[N, C*repeat*K] with a `normalize_plan` (bit-identical either way).

    `repeat` copies each channel's values `repeat` times (a single image filling the temporal patch: the patches of
    one frame are normalised once, then duplicated). `out`, when given, is written in place and returned.
    """
    n, c, k = patches.shape
    out = np.empty((n, c * repeat * k), np.float32) if out is None else out
    first = out.reshape(n, c, repeat, k)[:, :, 0]
    table, steps = plan
    if steps is None:
        for ch in range(c):
            first[:, ch] = table[ch][patches[:, ch]]
    else:  # uint8 operands are cast to float32 by the ufuncs, exactly like astype
        divisor, m, s = steps
        if divisor is not None:
            np.divide(patches, divisor, out=first)
            first -= m
        else:
            np.subtract(patches, m, out=first)
        first /= s
    if repeat > 1:
        out.reshape(n, c, repeat, k)[:, :, 1:] = first[:, :, None]
    return out


def resize_frames(
    frames: np.ndarray, height: int, width: int, backend: str = "pil", resample: int = BICUBIC
) -> tuple[np.ndarray, str]:
    """Resize uint8[T, H, W, C] with the backend's kernel -> (frames, layout for `patchify_uint8`)."""
    if frames.shape[1:3] == (height, width):
        return frames, "thwc"
    if backend == "pil":
        return resize_pil(frames, height, width, resample), "thwc"
    return resize_torch(frames, height, width, resample)


def patchify(
    frames: np.ndarray,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
    backend: str = "pil",
) -> tuple[np.ndarray, np.ndarray]:
    """uint8[T, H, W, 3] (or [H, W, 3]) -> (float32[t*h*w, 3*tp*p*p] pixel values, int64[3] grid (t, h, w)).

    One image or one video with default CLIP settings: `backend="pil"` is the PIL image processor's arithmetic,
    `"torch"` the torchvision (video / fast image) processor's.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8[T, H, W, 3] with T >= 1, got {frames.dtype}{list(frames.shape)}")
    height, width = smart_resize(frames.shape[1], frames.shape[2], patch_size * merge_size, min_pixels, max_pixels)
    frames, layout = resize_frames(frames, height, width, backend)
    repeat = temporal_patch_size if len(frames) == 1 else 1  # one image: normalise once, then fill the patch
    patches, grid = patchify_uint8(frames, patch_size, temporal_patch_size // repeat, merge_size, layout)
    return normalize_patches(patches, normalize_plan(backend), repeat), np.array(grid, np.int64)
