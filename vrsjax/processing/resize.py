"""Antialiased resampling of uint8 frames, bit-exact with the two backends transformers uses for Qwen2.5-VL.

Both Pillow (`Image.resize`, the PIL image processor) and torch (`interpolate(..., antialias=True)` on uint8, used
by torchvision in the video processor and the fast image processor) run the same separable two-pass filter:
per output sample, taps `[xmin, xmin + xsize)` around `center = (i + 0.5) * in / out`, filter weights normalised in
float64, rounded to fixed point, integer dot product plus half an LSB, shifted down and clamped to uint8; the
horizontal pass runs first and its uint8 result feeds the vertical pass. They differ only in the fixed-point
precision (Pillow: 22 bits; torch: the largest precision under which the biggest weight fits int16) and in how the
cubic polynomial is evaluated, which is why their outputs differ by 1-2 levels on ~1% of pixels. Pillow is called
directly for `backend="pil"`; torch's arithmetic is reproduced here in numpy (`backend="torch"`) as banded matmuls:
weights pre-scaled by 2**-precision keep every product and partial sum exactly representable (checked, else
float64), so BLAS in any order gives torch's integers. The work runs on one BLAS thread per call plus a small pool
over row bands / channel images, which holds up on a busy machine where OpenBLAS's own threads stall.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

# PIL resample codes (Image.Resampling) understood by the torch-exact kernel.
NEAREST, BILINEAR, BICUBIC = 0, 2, 3
_BLOCK = 16  # output samples per banded matmul block: large enough for BLAS, small enough to waste few flops
_ROWS = 256  # rows of the horizontal pass converted and multiplied together (about 1 MB: stays in cache)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic with a = -0.5, in torch's operation order (UpSample.h cubic_convolution1/2)."""
    a = -0.5
    x = np.abs(x)
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    outer = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTERS = {BICUBIC: (_cubic, 4), BILINEAR: (_triangle, 2)}


@functools.lru_cache(maxsize=256)
def torch_aa_weights(in_size: int, out_size: int, resample: int = BICUBIC) -> tuple[np.ndarray, np.ndarray, int]:
    """torch's uint8 antialias weights for one axis: (xmin int[out], int weights [out, K], precision bits).

    `_compute_indices_min_size_weights_aa` + `_compute_index_ranges_int16_weights` (align_corners=False, no scale
    factor); weights past `xsize` are 0, so a tap's input index is always `xmin + k`.
    """
    if resample not in _FILTERS:
        raise NotImplementedError(
            f"resample={resample}: the torch-exact kernel supports BICUBIC (3) and BILINEAR (2); "
            f"use backend='pil' for other filters"
        )
    filt, interp = _FILTERS[resample]
    scale = in_size / out_size
    support = (interp * 0.5) * scale if scale >= 1.0 else interp * 0.5
    taps = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xsize = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin, 0, taps)
    k = np.arange(taps)
    w = filt(((k[None] + xmin[:, None]) - center[:, None] + 0.5) * invscale)
    w = np.where(k[None] < xsize[:, None], w, 0.0)
    total = np.zeros(out_size)
    for j in range(taps):  # left-to-right accumulation, as the C loop
        total = total + w[:, j]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    wmax = float(w.max())
    precision = 0
    while precision < 22 and int(0.5 + wmax * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = w * (1 << precision)
    ints = np.where(scaled < 0, (-0.5 + scaled).astype(np.int64), (0.5 + scaled).astype(np.int64))
    return xmin, ints, precision


@functools.lru_cache(maxsize=256)
def _bands(in_size: int, out_size: int, resample: int) -> tuple[list, type]:
    """Blocks (o0, o1, i0, i1, weights [o1-o0, i1-i0]) of the banded weight matrix pre-scaled by 2**-precision.

    Scaling by a power of two keeps every product and partial sum exact; the largest one (plus the rounding half)
    must stay below 2**24 units of 2**-precision for float32 to be exact, else float64 is used.
    """
    xmin, ints, precision = torch_aa_weights(in_size, out_size, resample)
    bound = 255 * int(np.abs(ints).sum(axis=1).max()) + (1 << max(precision - 1, 0))
    dtype = np.float32 if bound < (1 << 24) else np.float64
    taps = ints.shape[1]
    blocks = []
    for o0 in range(0, out_size, _BLOCK):
        o1 = min(o0 + _BLOCK, out_size)
        i0, i1 = int(xmin[o0]), min(int(xmin[o1 - 1]) + taps, in_size)
        dense = np.zeros((o1 - o0, i1 - i0), np.float64)
        for row, o in enumerate(range(o0, o1)):
            cols = int(xmin[o]) - i0 + np.arange(taps)
            keep = cols < i1 - i0
            dense[row, cols[keep]] = ints[o, keep]
        blocks.append((o0, o1, i0, i1, (dense / (1 << precision)).astype(dtype)))
    return blocks, dtype


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="vrsjax-resize")


def _in_parallel(work, n: int, step: int) -> None:
    """work(i0, i1) over [0, n) in chunks of `step`, on the pool (numpy and BLAS release the GIL)."""
    edges = list(range(0, n, step)) + [n]
    if len(edges) == 2:
        work(0, n)
    else:
        list(_pool().map(work, edges[:-1], edges[1:]))


def _round_into(acc: np.ndarray, out: np.ndarray) -> None:
    """out (uint8) = floor(acc + 1/2) clamped to [0, 255]; the cast truncates, which is the floor of a value >= 0."""
    acc += 0.5
    np.clip(acc, 0, 255, out=acc)
    out[...] = acc


def _pass_last_axis(x: np.ndarray, out_size: int, resample: int) -> np.ndarray:
    """uint8[R, W] -> uint8[R, out]: one torch AA pass along the last axis, in bands of rows that stay in cache."""
    blocks, dtype = _bands(x.shape[1], out_size, resample)
    out = np.empty((x.shape[0], out_size), np.uint8)

    def band(r0: int, r1: int) -> None:
        src = x[r0:r1].astype(dtype)
        acc = np.empty((r1 - r0, out_size), dtype)
        for o0, o1, i0, i1, dense in blocks:
            acc[:, o0:o1] = src[:, i0:i1] @ dense.T
        _round_into(acc, out[r0:r1])

    _in_parallel(band, x.shape[0], _ROWS)
    return out


def _pass_middle_axis(x: np.ndarray, out_size: int, resample: int) -> np.ndarray:
    """uint8[B, H, W] -> uint8[B, out, W]: one torch AA pass along axis 1, image by image."""
    blocks, dtype = _bands(x.shape[1], out_size, resample)
    out = np.empty((x.shape[0], out_size, x.shape[2]), np.uint8)

    def images(b0: int, b1: int) -> None:
        for b in range(b0, b1):
            src = x[b].astype(dtype)
            acc = np.empty((out_size, x.shape[2]), dtype)
            for o0, o1, i0, i1, dense in blocks:
                np.matmul(dense, src[i0:i1], out=acc[o0:o1])
            _round_into(acc, out[b])

    _in_parallel(images, x.shape[0], 1)
    return out


@functools.cache
def _openblas():
    """numpy's (and scipy's) OpenBLAS, to run our many small matmuls on one thread: OpenBLAS threads spin on each
    call and stall badly on a busy machine; parallelism belongs to the data workers (one sample each)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController().select(internal_api="openblas")


_BLAS_LOCK = threading.Lock()
_BLAS_USERS = [0, None]  # calls inside the limit, and the limiter that restores the original thread count


@contextlib.contextmanager
def _one_blas_thread():
    """Limit OpenBLAS to one thread while any resize runs; counted, so concurrent callers restore it only once."""
    blas = _openblas()
    if blas is None or not blas.lib_controllers:
        yield
        return
    with _BLAS_LOCK:
        if _BLAS_USERS[0] == 0:
            _BLAS_USERS[1] = blas.limit(limits=1)
        _BLAS_USERS[0] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS[0] -= 1
            if _BLAS_USERS[0] == 0:
                _BLAS_USERS[1].restore_original_limits()


def resize_torch(frames: np.ndarray, height: int, width: int, resample: int = BICUBIC) -> tuple[np.ndarray, str]:
    """uint8[T, H, W, C] -> (uint8[T, C, height, width], 'tchw'): torch `interpolate(antialias=True)` on uint8,
    bit-exact. Channels-first, as torch works: the horizontal pass contracts the last axis, the vertical one the
    rows of each channel image; `patchify_uint8` reads this layout directly."""
    t, h, w, c = frames.shape
    x = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    with _one_blas_thread():
        if w != width:  # horizontal pass first, as torch and Pillow do: its uint8 result feeds the vertical pass
            x = _pass_last_axis(x.reshape(t * c * h, w), width, resample).reshape(t, c, h, width)
        if h != height:
            x = _pass_middle_axis(x.reshape(t * c, h, width), height, resample).reshape(t, c, height, width)
    return x, "tchw"


def resize_pil(frames: np.ndarray, height: int, width: int, resample: int = BICUBIC) -> np.ndarray:
    """uint8[T, H, W, 3] -> uint8[T, height, width, 3] with Pillow (what the PIL image processor calls)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), resample=resample)) for f in frames])
