"""Video in and out for the inference pipelines: reading a video file (PyAV) or a folder of frames (PIL), writing
per-frame PNG masks, and an overlay video (MP4 through PyAV, or GIF through PIL) with the masks and prompts drawn.

A video is `uint8[T, H, W, 3]` RGB frames plus one name per frame: the file stems of a folder (sorted by name,
the ReVOS/MeViS/DAVIS layout), or `00000`, `00001`, ... for a video file. Every failure names the file: a missing
path, a folder without images, frames of different sizes, a file FFmpeg cannot decode or with no video stream.

A damaged video file (bytes lost or overwritten mid-stream) is decoded packet by packet. A frame is damaged when
its packet does not decode (it is then replaced by the previous good frame, so the frames keep their times and
names) or when FFmpeg flags it corrupt (kept as FFmpeg concealed it). Damaged frames are counted, logged in one
line and listed in `Video.damaged`; more than MAX_DAMAGED_FRACTION of them is a UserError naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vrsjax.errors import UserError
from vrsjax.processing.frames import IMAGE_SUFFIXES, load_frames

logger = logging.getLogger(__name__)

MAX_DAMAGED_FRACTION = 0.1  # more damaged frames than this and a video file is refused: its masks would be noise

MASK_COLOR = (255, 40, 40)
BOX_COLOR = (40, 255, 40)
POSITIVE_COLOR = (40, 255, 40)
NEGATIVE_COLOR = (255, 40, 255)


@dataclass
class Video:
    """frames: uint8[T, H, W, 3] RGB; names: one name per frame (PNG masks are written as `<name>.png`);
    fps: the file's frame rate (None for a folder); source: where it was read from; damaged: indices of the frames
    FFmpeg could not decode cleanly (a video file only)."""

    frames: np.ndarray
    names: list[str]
    fps: float | None
    source: str
    damaged: list[int] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def read_video(path: str | Path, max_damaged: float = MAX_DAMAGED_FRACTION) -> Video:
    """A folder of frames (sorted by file name) or a video file any FFmpeg build decodes (mp4, avi, webm, ...);
    max_damaged: the largest fraction of damaged frames accepted in a file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video {path} does not exist; give a video file or a folder of frames")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"video folder {path} holds no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Video(load_frames(files), [p.stem for p in files], None, str(path))
    frames, fps, damaged = _decode(path)
    _check_damage(path, len(frames), damaged, max_damaged)
    return Video(frames, [f"{t:05d}" for t in range(len(frames))], fps, str(path), damaged)


def _decode(path: Path) -> tuple[np.ndarray, float | None, list[int]]:
    """uint8[T, H, W, 3], the frame rate and the damaged frame indices of the first video stream, with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            times, decoded = _demux(stream, container.demux(stream))
    except av.FFmpegError as err:
        raise ValueError(
            f"cannot decode video {path}: {err}. Is it a video file? Re-encode it or pass a folder of frames"
        ) from err
    if not decoded:
        raise ValueError(f"cannot decode any frame of video {path}; the file is empty, truncated or damaged")
    sizes = {f.shape for _, f, _ in decoded}
    if len(sizes) > 1:
        raise ValueError(f"video {path} changes frame size mid-stream ({sorted(sizes)}); re-encode it at one size")
    frames, damaged = _on_timeline(times, decoded)
    return np.stack(frames), fps, damaged


def _demux(stream, packets) -> tuple[list, list]:
    """(presentation times of every packet, [(time, uint8[H, W, 3], flagged corrupt)] of the decoded frames).
    A packet FFmpeg refuses is skipped: its frame is missing from the decoded ones."""
    import av

    times, decoded = [], []
    for packet in packets:
        if packet.pts is not None:
            times.append(packet.pts)
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue
        decoded += [(f.pts, f.to_ndarray(format="rgb24"), bool(f.is_corrupt)) for f in frames]
    return times, decoded


def _on_timeline(times: list, decoded: list) -> tuple[list[np.ndarray], list[int]]:
    """The frames at every packet time, a missing one replaced by the previous frame (the first by the next), and
    the indices of the missing and corrupt ones. Without usable times: the decoded frames in order."""
    by_time = {t: (frame, corrupt) for t, frame, corrupt in decoded}
    timeline = sorted(set(times))
    if None in by_time or not set(by_time) <= set(timeline):
        return [f for _, f, _ in decoded], [i for i, (_, _, corrupt) in enumerate(decoded) if corrupt]
    first = by_time[min(by_time)][0]
    frames, damaged, last = [], [], first
    for i, t in enumerate(timeline):
        frame, corrupt = by_time.get(t, (None, True))
        last = last if frame is None else frame
        frames.append(last)
        if corrupt:
            damaged.append(i)
    return frames, damaged


def _check_damage(path: Path, count: int, damaged: list[int], max_damaged: float) -> None:
    if not damaged:
        return
    shown = ", ".join(str(i) for i in damaged[:10]) + (", ..." if len(damaged) > 10 else "")
    if len(damaged) > max_damaged * count:
        raise UserError(
            f"video {path}: {len(damaged)} of {count} frames are damaged (frames {shown}), more than "
            f"{max_damaged:.0%}; re-encode or re-download it, or pass a folder of frames"
        )
    logger.warning(
        "video %s: %d of %d frames are damaged (frames %s); each missing one repeats the previous frame",
        path,
        len(damaged),
        count,
        shown,
    )


def write_masks(out_dir: str | Path, names: list[str], masks: np.ndarray) -> list[Path]:
    """bool[T, H, W] -> `<out_dir>/<name>.png`, grayscale 0/255 (the benchmarks' prediction format)."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or len(masks) != len(names):
        raise ValueError(f"expected masks [T, H, W] with T = {len(names)} frame names, got shape {masks.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, mask in zip(names, masks, strict=True):
        paths.append(out / f"{name}.png")
        Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(paths[-1])
    return paths


def overlay(
    frames: np.ndarray,
    masks: np.ndarray,
    keyframe: int | None = None,
    boxes=(),
    points=(),
    labels=(),
    alpha: float = 0.5,
) -> np.ndarray:
    """uint8[T, H, W, 3] frames with the masks tinted in, and on the keyframe its boxes, positive and negative points
    (label 1 / 0) and a border so the keyframe stands out when playing. boxes: [K][4] x1, y1, x2, y2 in pixels."""
    frames, masks = np.asarray(frames), np.asarray(masks) > 0
    tint = np.asarray(MASK_COLOR, np.float32)
    out = np.where(masks[..., None], (1 - alpha) * frames + alpha * tint, frames).round().astype(np.uint8)
    if keyframe is None:
        return out
    image = Image.fromarray(out[keyframe])
    draw = ImageDraw.Draw(image)
    width = max(1, round(min(image.size) / 160))
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=BOX_COLOR, width=width)
    radius = 2 * width + 1
    for (x, y), label in zip(points, labels, strict=True):
        color = POSITIVE_COLOR if label else NEGATIVE_COLOR
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=color, width=width)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=BOX_COLOR, width=width)
    out[keyframe] = np.asarray(image)
    return out


def write_video(path: str | Path, frames: np.ndarray, fps: float = 5.0) -> Path:
    """uint8[T, H, W, 3] -> an MP4 (H.264 through PyAV, MPEG-4 part 2 when the FFmpeg build lacks libx264) or an
    animated GIF (PIL), chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, np.uint8)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"overlay video {path}: the suffix must be .mp4 or .gif")
    _encode_mp4(path, frames, fps)
    return path


def _encode_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    from fractions import Fraction

    import av

    # yuv420p needs even sides: pad the last row/column by repeating it.
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        try:
            stream = container.add_stream("libx264", rate=rate)
        except (av.FFmpegError, ValueError):
            stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
