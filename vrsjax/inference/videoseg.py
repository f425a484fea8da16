"""VideoSeg-R1's inference: a hierarchical text-guided frame sampler finds the target frame, the policy answers boxes
with a positive and a negative point there, SAM2 segments that frame and XMem (or SAM2) propagates both ways.

The paper (Xu et al. 2025, seeds/001) gives the procedure but neither code, prompts nor the constants K, M, delta;
they are `VideoSegConfig` fields with our defaults. Time is counted in frames, shown as `(t s)` like Veason-R1
(a 1 FPS reading of the frame index). Stage 1: ask K times (sampled at `sampler_temperature`) for the interval
relevant to the query over `sampler_frames` frames of the current segment; the mean interval, widened to whole
frames and clipped to the segment, becomes the next segment; repeat while the segment is longer than delta * T
(stopping early after `max_rounds`, when no answer parses, or when a round does not shorten the segment).
Stage 2: ask M times for the target's position in the segment as a percentage; `f_tgt = start + floor(T_key * p)`
with p the mean of the parsed answers (the segment's middle when none parses). Stage 3: reference frames (uniform
over the video) and key-segment frames as timestamped context, then the target frame at `target_size`, asked
greedily for VisionReasoner-style JSON with `negative_point_2d` (our wording, `VIDEOSEG_ANSWER_TEMPLATE`); each object
prompts SAM2 on the target frame with its box, its point (label 1) and its negative points (label 0); the masks are
propagated forward and backward (XMem: two fresh runs from the target frame; SAM2: its video predictor). An
unusable final answer falls back to the box [0, 0, 0, 0] as Veason-R1 does and is counted in `parse_ok`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrsjax.inference.result import InferenceResult, timed
from vrsjax.inference.veason import check_query, prepare_video
from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT
from vrsjax.processing.coords import to_original
from vrsjax.processing.frames import resize_square
from vrsjax.processing.prompts import (
    mean_interval,
    parse_interval,
    parse_percent,
    target_frame,
    timestamped_images,
    videoseg_interval_text,
    videoseg_percent_text,
    videoseg_prompt,
)
from vrsjax.processing.sampling import veason_eval_indices

VIDEOSEG_ANSWER_TEMPLATE = (
    "{frames}\nThese frames are sampled from a video; each is preceded by its timestamp.\n"
    "Target frame ({target}s): <image>\n"
    'Please find "{Question}" in the target frame with bboxs and points.'
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s), and a negative point just outside each of "
    "them, in JSON format in the pixel coordinates of the target frame."
    "i.e., <think> thinking process here </think>"
    '<answer>[{{"bbox_2d": [10,100,200,210], "point_2d": [30,110], "negative_point_2d": [5,95]}}]</answer>'
)
NEGATIVE_POINT_KEY = "negative_point_2d"
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
PROPAGATORS = ("xmem", "sam2")


@dataclass(frozen=True)
class VideoSegConfig:
    """num_intervals K, num_percents M: answers sampled per sampler question; delta: stop narrowing once the segment
    has at most delta * T frames; max_rounds: of narrowing; sampler_frames / sampler_size: frames shown per sampler
    question and their square size; sampler_temperature: sampling temperature of the K and M answers (0 with K = M
    = 1 gives a deterministic sampler); num_reference_frames / num_key_frames / context_size: context images of the
    final question; target_size: the target frame's size (VisionReasoner's 840); propagator: xmem or sam2."""

    num_intervals: int = 4
    num_percents: int = 4
    delta: float = 0.25
    max_rounds: int = 3
    sampler_frames: int = 8
    sampler_size: int = 560
    sampler_temperature: float = 0.7
    num_reference_frames: int = 4
    num_key_frames: int = 4
    context_size: int = 560
    target_size: int = 840
    max_new_tokens: int = 1024
    propagator: str = "xmem"
    seed: int = 0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if min(self.num_intervals, self.num_percents, self.sampler_frames, self.max_new_tokens) < 1:
            raise ValueError(f"{self}: num_intervals, num_percents, sampler_frames and max_new_tokens must be >= 1")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.max_rounds < 0 or self.num_reference_frames < 0 or self.num_key_frames < 0:
            raise ValueError(f"{self}: max_rounds, num_reference_frames and num_key_frames must be >= 0")
        for name in ("sampler_size", "context_size", "target_size"):
            if getattr(self, name) < 28 or getattr(self, name) % 28:
                raise ValueError(
                    f"{name} must be a multiple of 28 (the vision patch x merge), got {getattr(self, name)}"
                )
        if self.propagator not in PROPAGATORS:
            raise ValueError(f"propagator must be one of {PROPAGATORS}, got {self.propagator!r}")


def uniform_ids(start: int, end: int, count: int) -> list[int]:
    """`count` frames spread over [start, end] (inclusive) as Veason-R1 samples a video (all of them if fewer)."""
    return [start + t for t in veason_eval_indices(end - start + 1, count)]


def narrow(segment: tuple[int, int], interval: tuple[float, float] | None) -> tuple[int, int] | None:
    """The next key segment: the mean interval widened to whole frames and clipped to `segment`; None when there is
    no interval or it lies outside the segment."""
    if interval is None:
        return None
    start, end = max(segment[0], math.floor(interval[0])), min(segment[1], math.ceil(interval[1]))
    return (start, end) if start <= end else None


def _ask(policy, config: VideoSegConfig, text: str, frames: np.ndarray, ids: list[int], size: int, n: int, seed: int):
    images = list(resize_square(frames[ids], size))
    prompt = videoseg_prompt(text, config.system_prompt, template=policy.chat_template)
    return policy.answer(
        [prompt], [images], n=n, temperature=config.sampler_temperature, seed=seed, max_new_tokens=config.max_new_tokens
    )[0]


def locate(policy, frames: np.ndarray, query: str, config: VideoSegConfig = VideoSegConfig()) -> tuple[int, dict]:
    """Stages 1-2 of the sampler over frames uint8[T, H, W, 3] -> (target frame, a trace of every round)."""
    total = len(frames)
    segment, rounds = (0, total - 1), []
    while segment[1] - segment[0] + 1 > config.delta * total and len(rounds) < config.max_rounds:
        ids = uniform_ids(*segment, config.sampler_frames)
        text = videoseg_interval_text(query, ids, total)
        answers = _ask(
            policy, config, text, frames, ids, config.sampler_size, config.num_intervals, config.seed + len(rounds)
        )
        intervals = [parse_interval(a) for a in answers]
        new = narrow(segment, mean_interval(intervals))
        rounds.append({"segment": list(segment), "frame_ids": ids, "intervals": intervals, "next": new})
        if new is None or new[1] - new[0] >= segment[1] - segment[0]:
            break
        segment = new
    ids = uniform_ids(*segment, config.sampler_frames)
    answers = _ask(
        policy,
        config,
        videoseg_percent_text(query, ids),
        frames,
        ids,
        config.sampler_size,
        config.num_percents,
        config.seed + 1000,
    )
    percents = [parse_percent(a) for a in answers]
    target = target_frame(segment[0], segment[1] - segment[0] + 1, percents)
    trace = {"rounds": rounds, "key_segment": list(segment), "percent_frame_ids": ids, "percents": percents}
    return target, trace


def context_ids(total: int, segment: tuple[int, int], target: int, config: VideoSegConfig) -> list[int]:
    """Reference frames (uniform over the video) and key-segment frames, sorted, without the target frame."""
    ids = set(uniform_ids(0, total - 1, config.num_reference_frames)) if config.num_reference_frames else set()
    if config.num_key_frames:
        ids |= set(uniform_ids(*segment, config.num_key_frames))
    return sorted(ids - {target})


def answer_prompt(query: str, context: list[int], target: int, template: str = VIDEOSEG_ANSWER_TEMPLATE) -> str:
    """The final question's user text; `<image>` placeholders for the context frames, then the target frame."""
    return template.format(
        frames=timestamped_images(context), target=target, Question=query.lower().strip('."?!')
    ).lstrip("\n")


def read_answer(text: str, width: int, height: int, size: int = 840) -> tuple[list, list, list, Any]:
    """The final answer -> (boxes [K][4], points [K][P][2], labels [K][P], JSON) in the width x height frame.

    Items without a 4-number `bbox_2d` are dropped; `point_2d` (label 1) and `negative_point_2d` ([x, y] or a list
    of them, label 0) are optional. No usable item gives ([], [], [], data)."""
    match = _ANSWER.search(text)
    try:
        data = json.loads(match.group(1)) if match else None
    except ValueError:
        data = None
    items = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    boxes, points, labels = [], [], []
    for item in items:
        box = _numbers(item.get("bbox_2d") if isinstance(item, dict) else None, 4)
        if box is None:
            continue
        positive = _numbers(item.get("point_2d"), 2)
        negatives = item.get(NEGATIVE_POINT_KEY)
        if isinstance(negatives, list) and negatives and all(isinstance(v, list) for v in negatives):
            negatives = [_numbers(v, 2) for v in negatives]
        else:
            negatives = [_numbers(negatives, 2)]
        pts = [(p, 1) for p in [positive] if p is not None] + [(p, 0) for p in negatives if p is not None]
        boxes.append([int(v) for v in to_original(box, width, height, size)])
        points.append([[int(v) for v in to_original(p, width, height, size)] for p, _ in pts])
        labels.append([label for _, label in pts])
    return boxes, points, labels, data


def _numbers(value: Any, count: int) -> np.ndarray | None:
    if not isinstance(value, list | tuple) or len(value) != count:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return np.asarray(value, np.float64)


def segment_target(sam, frame: np.ndarray, boxes, points, labels) -> np.ndarray:
    """bool[K, H, W]: SAM2's image predictor on the target frame, one object per box with its points."""
    masks = []
    for box, pts, lbl in zip(boxes, points, labels, strict=True):
        kwargs = {"points": np.asarray(pts, np.float32), "labels": np.asarray(lbl, np.int32)} if pts else {}
        masks.append(sam.segment_image(frame, boxes=np.asarray(box, np.float32), **kwargs))
    return np.stack(masks)


def propagate(frames, target: int, target_masks: np.ndarray, sam=None, xmem=None, prompts=None) -> np.ndarray:
    """bool[T, H, W] from the target frame both ways: with XMem from the SAM2 masks bool[K, H, W], or (xmem None)
    with SAM2's video predictor from the same prompts [(box, points, labels)], objects OR-ed."""
    if xmem is not None:
        from vrsjax.services.xmem import masks_from_probs

        return masks_from_probs(xmem.propagate(frames, target_masks, target, direction="both"), union=True)
    requests = []  # one request per object (their point counts differ), tracked together by `propagate_group`
    for box, pts, lbl in prompts:
        kwargs = {"points": np.asarray([pts], np.float32), "labels": np.asarray([lbl], np.int32)} if pts else {}
        requests.append({"keyframe": target, "boxes": np.asarray([box], np.float32), **kwargs})
    return np.any(sam.propagate_group(prepare_video(sam, frames), requests), axis=0)


def run(
    policy, sam, frames: np.ndarray, query: str, config: VideoSegConfig = VideoSegConfig(), xmem=None
) -> InferenceResult:
    """One video uint8[T, H, W, 3] and one query -> `InferenceResult`; `xmem` is needed when propagator is xmem."""
    check_query(query)
    if config.propagator == "xmem" and xmem is None:
        raise ValueError("propagator 'xmem' needs an XMem network (SegmenterOptions.build_xmem()), or use 'sam2'")
    frames = np.asarray(frames)
    total, height, width = frames.shape[:3]
    timings: dict[str, float] = {}
    with timed(timings, "sampler"):
        target, trace = locate(policy, frames, query, config)
    context = context_ids(total, tuple(trace["key_segment"]), target, config)
    images = list(resize_square(frames[context], config.context_size)) if context else []
    images.append(resize_square(frames[target], config.target_size))
    text = videoseg_prompt(answer_prompt(query, context, target), config.system_prompt, template=policy.chat_template)
    with timed(timings, "generate"):
        (answer,) = policy.answer([text], [images], max_new_tokens=config.max_new_tokens)[0]
    boxes, points, labels, data = read_answer(answer, width, height, config.target_size)
    parse_ok = bool(boxes)
    if not parse_ok:
        boxes, points, labels = [[0, 0, 0, 0]], [[]], [[]]
    with timed(timings, "sam2"):
        target_masks = segment_target(sam, frames[target], boxes, points, labels)
    with timed(timings, config.propagator):
        prompts = list(zip(boxes, points, labels, strict=True))
        masks = propagate(frames, target, target_masks, sam, xmem if config.propagator == "xmem" else None, prompts)
    timings["total"] = sum(timings.values())
    return InferenceResult(
        masks=masks,
        keyframe=target,
        boxes=boxes,
        text=answer,
        answer=data,
        parse_ok=parse_ok,
        frame_ids=context + [target],
        points=points,
        labels=labels,
        timings=timings,
        details={"pipeline": "videoseg", "propagator": config.propagator, **trace},
    )
