"""`vrsjax infer`: one video and one query through either pipeline, written out for people to look at.

`infer(checkpoint, video, query, out)` reads the video (a file through PyAV or a folder of frames), loads the policy,
builds the segmenters from `SegmenterOptions`, runs the Veason-R1 or VideoSeg-R1 pipeline and writes
`<out>/masks/<frame>.png` (0/255 per frame), `<out>/overlay.mp4` (or .gif) with the mask tinted in and the keyframe's
boxes and points drawn, and `<out>/result.json` (reasoning text, parsed answer, keyframe, boxes, timings). Inputs are
checked before the model loads, so an unreadable video, an empty query or a checkpoint of another model fails fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from vrsjax.errors import UserError
from vrsjax.inference import veason, videoseg
from vrsjax.inference.policy import Policy, check_checkpoint
from vrsjax.inference.result import InferenceResult
from vrsjax.inference.segmenters import SegmenterOptions
from vrsjax.inference.video import overlay, read_video, write_masks, write_video

PIPELINES = ("veason", "videoseg")


def infer(
    checkpoint: str | Path,
    video: str | Path,
    query: str,
    out: str | Path,
    pipeline: str = "veason",
    segmenters: SegmenterOptions | None = None,
    config: veason.VeasonConfig | videoseg.VideoSegConfig | None = None,
    overlay_format: str = "mp4",
    policy: Policy | None = None,
) -> tuple[InferenceResult, dict[str, Path]]:
    """Run one query on one video and write masks, overlay and result.json under `out`; returns the result and
    the written paths. `policy`: an already loaded policy (the checkpoint is then only recorded)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if overlay_format not in ("mp4", "gif"):
        raise ValueError(f"overlay_format must be 'mp4' or 'gif', got {overlay_format!r}")
    veason.check_query(query)
    segmenters = segmenters or SegmenterOptions()
    config = config or (veason.VeasonConfig() if pipeline == "veason" else videoseg.VideoSegConfig())
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out}: is a file; give a folder for masks/, the overlay and result.json")
    start = time.perf_counter()
    clip = read_video(video)
    if policy is None:
        check_checkpoint(checkpoint)
    xmem = segmenters.build_xmem() if pipeline == "videoseg" and config.propagator == "xmem" else None
    sam = segmenters.build_sam2()
    load_start = time.perf_counter()
    policy = policy or Policy.load(checkpoint)
    load_seconds = time.perf_counter() - load_start
    if pipeline == "veason":
        result = veason.run(policy, sam, clip.frames, query, config)
    else:
        result = videoseg.run(policy, sam, clip.frames, query, config, xmem=xmem)
    result.timings["load_policy"] = load_seconds
    paths = write_outputs(out, clip, result, overlay_format)
    result.timings["wall"] = time.perf_counter() - start
    summary = {
        "pipeline": pipeline,
        "query": query,
        "video": clip.source,
        "checkpoint": str(checkpoint),
        "num_frames": clip.num_frames,
        "damaged_frames": clip.damaged,
        "height": clip.height,
        "width": clip.width,
        "config": asdict(config),
        "segmenters": asdict(segmenters),
        **result.summary(),
    }
    paths["result"].write_text(json.dumps(summary, indent=2, default=str))
    return result, paths


def write_outputs(out: str | Path, clip, result: InferenceResult, overlay_format: str = "mp4") -> dict[str, Path]:
    """Masks as PNGs and the overlay video; result.json's path is returned for the caller to fill."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_masks(out / "masks", clip.names, result.masks)
    points = [p for obj in result.points for p in obj]
    labels = [label for obj in result.labels for label in obj]
    frames = overlay(clip.frames, result.masks, result.keyframe, result.boxes, points, labels)
    video = write_video(out / f"overlay.{overlay_format}", frames, fps=clip.fps or 5.0)
    return {"masks": out / "masks", "overlay": video, "result": out / "result.json"}
