"""What an inference pipeline returns for one (video, query): the masks of every frame, the prompt it segmented
from, the policy's text, and how long each stage took — the same dataclass for both pipelines, so `vrsjax infer`,
`vrsjax predict` and the demo treat them alike.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class InferenceResult:
    """masks: bool[T, H, W] at the video's resolution, objects OR-ed.
    keyframe: the frame SAM2 was prompted on (Veason-R1's answered timestamp; VideoSeg-R1's target frame).
    boxes: [K][4] x1, y1, x2, y2 in original pixels; points [K][P][2] and labels [K][P] (1 positive, 0 negative),
    empty for Veason-R1. text: the policy's answer; answer: the parsed answer dict (None when it does not parse);
    parse_ok: False when the answer was unusable and the fallback prompt was used (counted by `predict`).
    frame_ids: the frames shown to the policy; timings: seconds per stage; details: pipeline-specific facts
    (VideoSeg-R1's sampler rounds, a clipped keyframe, ...)."""

    masks: np.ndarray
    keyframe: int
    boxes: list[list[int]]
    text: str
    answer: Any
    parse_ok: bool
    frame_ids: list[int]
    points: list[list[list[int]]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the masks, JSON-ready (what `vrsjax infer` writes to result.json)."""
        return {
            "keyframe": int(self.keyframe),
            "boxes": [[int(v) for v in box] for box in self.boxes],
            "points": [[[int(v) for v in p] for p in obj] for obj in self.points],
            "labels": [[int(v) for v in obj] for obj in self.labels],
            "text": self.text,
            "answer": self.answer,
            "parse_ok": bool(self.parse_ok),
            "frame_ids": [int(t) for t in self.frame_ids],
            "mask_shape": list(self.masks.shape),
            "mask_pixels_per_frame": [int(n) for n in np.asarray(self.masks).sum(axis=(1, 2))],
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "details": self.details,
        }


@contextmanager
def timed(timings: dict[str, float], name: str):
    """Adds the seconds spent in the block to timings[name]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
