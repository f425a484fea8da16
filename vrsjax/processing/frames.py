"""Reading frames from disk and the fixed-size resizes the seed systems apply before the processor.

`load_image` / `load_frames` / `load_video` return uint8 RGB arrays and fail with the file name on unreadable or
truncated files (Pillow loads lazily, so the pixels are forced here, not later in a worker). A video is a folder of
frames (the ReVOS/MeViS/DAVIS layout, sorted by name) or a video file, decoded with OpenCV when it is installed.
`resize_square` is Veason-R1's `Image.resize((560, 560), BILINEAR)` (VisionReasoner uses 840) and `fit_pixels` its
`process_image` (NEAREST resize into [min_pixels, max_pixels], then RGB).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_image(path: str | Path) -> np.ndarray:
    """uint8[H, W, 3] RGB; transparent pixels are composited onto white (as transformers does for RGBA)."""
    try:
        with Image.open(path) as image:
            image.load()
            if "A" in image.getbands() or image.info.get("transparency") is not None:
                image = image.convert("RGBA")
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image)
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # Pillow raises OSError for truncated/unknown files
        raise ValueError(f"cannot read image {path}: {err}. Re-extract or drop this frame.") from err


def load_frames(paths: list[str | Path]) -> np.ndarray:
    """uint8[T, H, W, 3] from image files of one size."""
    if len(paths) == 0:
        raise ValueError("no frame paths given")
    frames = [load_image(p) for p in paths]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        first = frames[0].shape
        odd = next(p for p, f in zip(paths, frames, strict=True) if f.shape != first)
        raise ValueError(f"frame {odd} is {sizes - {first}}, the first frame {paths[0]} is {first}; sizes must agree")
    return np.stack(frames)


def load_video(path: str | Path) -> tuple[np.ndarray, float | None]:
    """(uint8[T, H, W, 3], fps or None) from a folder of frames or a video file (needs opencv-python)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"video folder {path} holds no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return load_frames(files), None
    if not path.exists():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        import cv2
    except ImportError as err:
        raise ImportError(
            f"decoding {path} needs OpenCV (pip install opencv-python-headless), or extract its frames "
            "to a folder of images"
        ) from err
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        raise ValueError(f"cannot decode any frame of {path}; the file is unreadable or truncated")
    return np.stack(frames), (float(fps) if fps and fps > 0 else None)


def resize_square(frames: np.ndarray, size: int = 560, resample: int = Image.BILINEAR) -> np.ndarray:
    """uint8[T, H, W, 3] -> uint8[T, size, size, 3] with Pillow (Veason-R1: 560 bilinear; VisionReasoner: 840)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        return np.asarray(Image.fromarray(frames).resize((size, size), resample))
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), resample)) for f in frames])


def fit_pixels(image: np.ndarray, min_pixels: int, max_pixels: int) -> np.ndarray:
    """Veason-R1's `process_image`: NEAREST-resize by sqrt(budget / area) when the area leaves [min, max]."""
    pil = Image.fromarray(np.asarray(image))
    if pil.width * pil.height > max_pixels:
        factor = math.sqrt(max_pixels / (pil.width * pil.height))
        pil = pil.resize((int(pil.width * factor), int(pil.height * factor)), resample=Image.NEAREST)
    if pil.width * pil.height < min_pixels:
        factor = math.sqrt(min_pixels / (pil.width * pil.height))
        pil = pil.resize((int(pil.width * factor), int(pil.height * factor)), resample=Image.NEAREST)
    return np.asarray(pil.convert("RGB"))
