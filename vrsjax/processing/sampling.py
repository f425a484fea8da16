"""Which frames of a video the policy sees, and at what size: qwen-vl-utils, transformers and the two seed systems.

- `qwen_nframes` / `qwen_frame_indices` / `qwen_video`: qwen-vl-utils `fetch_video` on a decoded video (target fps,
  min/max frames, an even frame count, `linspace(...).round()` indices in float32 as torch computes them, and a
  per-frame pixel budget that shrinks as the frame count grows), `qwen_image_frames` for a video given as a list of
  images (each resized like an image, padded to an even count by repeating the last one).
- `hf_frame_indices`: `Qwen2VLVideoProcessor.sample_frames` (transformers 5.23), used when a processor config sets
  `do_sample_frames`.
- `veason_train_indices`: Veason-R1 training (keyframe drawn among the 5 largest-mask frames, stride
  `ceil(T / (N - 1))` started at `keyframe % stride` so the keyframe is always sampled); `veason_eval_indices`:
  Veason-R1 inference (8 frames `linspace(0, T-1, 8).astype(int)`, all frames of a shorter video).
Errors name the video (`name=`) and the numbers that do not fit.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from vrsjax.processing.patchify import MAX_RATIO
from vrsjax.processing.resize import BICUBIC, resize_torch

# qwen-vl-utils constants (vision_process.py)
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768


def _check_total(total_frames: int, name: str) -> None:
    if total_frames <= 0:
        raise ValueError(f"{name}: the video has {total_frames} frames; nothing to sample")


def qwen_smart_resize(
    height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: float = MIN_PIXELS, max_pixels: float = MAX_PIXELS
) -> tuple[int, int]:
    """qwen-vl-utils `smart_resize`: like transformers' but each side is at least `factor` before the area checks."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} of a {height}x{width} frame is over "
            f"{MAX_RATIO}; crop or pad it first"
        )
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def qwen_nframes(
    total_frames: int,
    video_fps: float,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int | None = None,
    name: str = "video",
) -> int:
    """qwen-vl-utils `smart_nframes`: frames to sample, even, in [2, total_frames]."""
    _check_total(total_frames, name)
    if fps is not None and nframes is not None:
        raise ValueError(f"{name}: give either fps or nframes, not both")
    if nframes is not None:
        n = round(nframes / FRAME_FACTOR) * FRAME_FACTOR
    else:
        lo = math.ceil(min_frames / FRAME_FACTOR) * FRAME_FACTOR
        hi = math.floor((max_frames if max_frames is not None else min(FPS_MAX_FRAMES, total_frames)) / 2) * 2
        n = total_frames / video_fps * (FPS if fps is None else fps)
        n = math.floor(min(min(max(n, lo), hi), total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= n <= total_frames:
        raise ValueError(
            f"{name}: {n} frames requested from a video of {total_frames} frames; qwen-vl-utils needs between "
            f"{FRAME_FACTOR} and the video length (lower fps/nframes, or use a longer clip)"
        )
    return int(n)


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """float32[steps] as torch.linspace computes it (float32 step; forward from start, backward from end)."""
    start32, end32 = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start32], np.float32)
    step = np.float32((end32 - start32) / np.float32(steps - 1))
    idx = np.arange(steps)
    fwd = start32 + step * idx.astype(np.float32)
    bwd = end32 - step * (steps - idx - 1).astype(np.float32)
    return np.where(idx < steps // 2, fwd, bwd).astype(np.float32)


def qwen_frame_indices(
    total_frames: int, nframes: int, start_frame: int = 0, end_frame: int | None = None
) -> np.ndarray:
    """int64[nframes]: `torch.linspace(start, end, n).round().long()` (round half to even, like torch)."""
    end = total_frames - 1 if end_frame is None else end_frame
    return np.rint(torch_linspace_f32(start_frame, end, nframes)).astype(np.int64)


def qwen_video_max_pixels(
    nframes: int,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: float | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> float:
    """Per-frame pixel budget of `fetch_video`: the total budget shared by the frames, floored at 1.05 x min."""
    budget = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return budget if max_pixels is None else min(max_pixels, budget)


def qwen_video(
    video: np.ndarray,
    video_fps: float,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = FPS_MIN_FRAMES,
    max_frames: int | None = None,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: float | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    name: str = "video",
) -> tuple[np.ndarray, float]:
    """qwen-vl-utils `fetch_video` on decoded frames uint8[T, H, W, 3] -> (sampled, resized uint8 frames, sample fps).

    Frame choice, sample fps and size are qwen-vl-utils'. Pixels use torchvision's uint8 antialiased bicubic (the
    arithmetic of transformers' video processor, bit-exact, see `resize.py`); qwen-vl-utils calls the older
    `transforms.functional.resize`, which resizes in float32 and rounds, so its frames can differ by a few levels.
    """
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8[T, H, W, 3] frames, got {video.dtype}{list(video.shape)}")
    total = video.shape[0]
    n = qwen_nframes(total, video_fps, fps, nframes, min_frames, max_frames, name)
    frames = video[qwen_frame_indices(total, n)]
    sample_fps = n / max(total, 1e-6) * video_fps
    budget = qwen_video_max_pixels(n, min_pixels, max_pixels, total_pixels)
    height, width = qwen_smart_resize(frames.shape[1], frames.shape[2], IMAGE_FACTOR, min_pixels, budget)
    if (height, width) != frames.shape[1:3]:
        resized, layout = resize_torch(frames, height, width, BICUBIC)
        frames = np.ascontiguousarray(resized.transpose([layout.index(a) for a in "thwc"]))
    return frames, sample_fps


def qwen_image_frames(
    images: list, fps: float = FPS, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, float]:
    """A video given as a list of images (qwen-vl-utils): each converted to RGB and resized with Pillow's default
    filter to its own `smart_resize`, then the list padded to an even length -> (uint8[T, H, W, 3], fps)."""
    if len(images) == 0:
        raise ValueError("the video is an empty list of frames")
    frames = []
    for image in images:
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        if image.mode == "RGBA":  # qwen-vl-utils pastes transparent pixels onto white
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.split()[3])
            image = background
        image = image.convert("RGB")
        height, width = qwen_smart_resize(image.height, image.width, IMAGE_FACTOR, min_pixels, max_pixels)
        frames.append(np.asarray(image.resize((width, height))))
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"the frames resize to different sizes {sorted({f.shape for f in frames})}; give equal sizes")
    frames += [frames[-1]] * (-len(frames) % FRAME_FACTOR)
    return np.stack(frames), fps


def hf_frame_indices(
    total_frames: int,
    video_fps: float | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    temporal_patch_size: int = 2,
    min_frames: int = 4,
    max_frames: int = 768,
    name: str = "video",
) -> np.ndarray:
    """`Qwen2VLVideoProcessor.sample_frames`: `arange(0, T, T / n)` truncated, n rounded/clamped to the temporal
    patch; all frames when neither fps nor num_frames is given."""
    _check_total(total_frames, name)
    if fps is not None and num_frames is not None:
        raise ValueError(f"{name}: num_frames and fps are mutually exclusive")
    tp = temporal_patch_size
    if num_frames is not None:
        num_frames = round(num_frames / tp) * tp
    elif fps is not None:
        if video_fps is None:
            raise ValueError(f"{name}: sampling at {fps} fps needs the video's own fps (video_metadata['fps'])")
        top = math.floor(min(max_frames, total_frames) / tp) * tp
        num_frames = min(max(total_frames / video_fps * fps, min_frames), top, total_frames)
        num_frames = math.floor(num_frames / tp) * tp
    if num_frames is None:
        return np.arange(total_frames)
    if num_frames > total_frames or num_frames <= 0:
        raise ValueError(f"{name}: cannot sample {num_frames} frames from {total_frames}; lower num_frames or fps")
    step = total_frames / num_frames  # torch.arange(0, T, step) in float32, then .int()
    count = math.ceil(total_frames / step)
    return (np.arange(count) * step).astype(np.float32).astype(np.int64)


def veason_train_indices(
    masks_or_areas: np.ndarray, num_frames: int = 6, rng: np.random.Generator | None = None, top_k: int = 5
) -> tuple[list[int], int]:
    """Veason-R1 training sampling -> (frame ids, keyframe). `masks_or_areas`: bool/uint8[T, H, W] union GT masks
    or int[T] mask areas. The keyframe is a random choice among the `top_k` largest-area frames; with N frames the
    stride is ceil(T / (N - 1)) from `keyframe % stride`: at most N frames come back (fewer when the stride does not
    divide T evenly, as in the reference) and the keyframe is always one of them."""
    x = np.asarray(masks_or_areas)
    areas = (x > 0).reshape(len(x), -1).sum(axis=1) if x.ndim > 1 else x
    total = len(areas)
    _check_total(total, "veason sample")
    top = areas.argsort()[-top_k:][::-1]  # same (unstable) sort as the reference, so ties pick the same frames
    keyframe = int((rng or np.random.default_rng()).choice(top))
    if num_frames == 1:
        return [keyframe], keyframe
    step = math.ceil(total / (num_frames - 1))
    return list(range(keyframe % step, total, step)), keyframe


def veason_eval_indices(total_frames: int, num_frames: int = 8) -> list[int]:
    """Veason-R1 inference: `linspace(0, T - 1, N)` truncated to int when T > N, else every frame."""
    _check_total(total_frames, "veason eval video")
    if total_frames > num_frames:
        return [int(i) for i in np.linspace(0, total_frames - 1, num=num_frames, dtype=int)]
    return list(range(total_frames))
