"""Veason-R1's keyframe-first inference: the policy picks a keyframe and boxes, SAM2 segments and tracks them.

As the released evaluation does (SitongGong/Veason-R1 `batch_eval_keyframe_sft_dataset_.py` and
`multi_gpu_eval_keyframe_sft_mod_reason_vos.py`): `linspace(0, T-1, 8)` truncated to int (every frame when T <= 8),
each sampled frame resized to 560x560 with PIL bilinear and shown as `(t s)<image>` with its raw frame index; the
Veason prompt with the system prompt "You are a helpful assistant."; greedy decoding, 1024 new tokens; the answer's
boxes mapped back with `int(v * W / 560 + 0.5)` where W x H is the video's size; an unreadable answer or an empty box
list falls back to keyframe 0 and the box [0, 0, 0, 0] (still given to SAM2, as the reference does), counted in
`parse_ok`. SAM2 is prompted with every box on the keyframe at full resolution and tracks each object forward to
the last frame, then backward to the first; the objects' masks are OR-ed. One deviation: the reference crashes on
a keyframe outside the video; here it is clipped into [0, T-1] and reported in `details["keyframe_clipped"]`.
`run_batch` answers several (video, query) pairs with one `generate` call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vrsjax.inference.result import InferenceResult, timed
from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT
from vrsjax.processing.frames import resize_square
from vrsjax.processing.prompts import parse_veason_answer, veason_prompt
from vrsjax.processing.sampling import veason_eval_indices

FALLBACK = (0, [[0, 0, 0, 0]])
CACHE_FRAMES = 64
"""Videos up to this many frames get every frame's SAM2 features computed once and kept (fast for several objects
and queries); longer ones stream them as the official predictor does (hiera_l at 1024 holds ~170 MB per frame)."""
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


@dataclass(frozen=True)
class VeasonConfig:
    """num_frames: frames shown to the policy (8 at inference); size: their square size (560 -> 400 vision tokens
    each); max_new_tokens: 1024 as released; system_prompt: the chat's system message."""

    num_frames: int = 8
    size: int = 560
    max_new_tokens: int = 1024
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.max_new_tokens < 1:
            raise ValueError(f"num_frames ({self.num_frames}) and max_new_tokens ({self.max_new_tokens}) must be >= 1")
        if self.size < 28 or self.size % 28:
            raise ValueError(f"size must be a multiple of 28 (the vision patch x merge), got {self.size}")


@dataclass(frozen=True)
class VeasonAnswer:
    """keyframe and boxes (original pixels) to prompt SAM2 with; data: the answer's JSON (None if unreadable)."""

    keyframe: int
    boxes: list[list[int]]
    data: Any
    parse_ok: bool
    keyframe_clipped: bool = False


def check_query(query: str) -> str:
    """The query, or a clear error when it is empty or holds only spaces and dots (Veason strips the dots)."""
    if not isinstance(query, str) or not query.strip(". \t\r\n"):
        raise ValueError(f"empty query {query!r}: give the expression to segment, e.g. --query 'the dog on the left'")
    return query


def prompt(query: str, frames: np.ndarray, config: VeasonConfig = VeasonConfig(), chat_template: str | None = None):
    """-> (prompt text, frame_ids, uint8[N, S, S, 3] the sampled frames resized) for frames uint8[T, H, W, 3]."""
    check_query(query)
    frame_ids = veason_eval_indices(len(frames), config.num_frames)
    images = resize_square(np.asarray(frames)[frame_ids], config.size)
    text = veason_prompt(query, frame_ids, config.system_prompt, template=chat_template)
    return text, frame_ids, images


def answer_data(text: str) -> Any:
    """The JSON inside `<answer>` as the reference reads it (single quotes turned into double), or None."""
    match = _ANSWER.search(text)
    if match is None:
        return None
    try:
        return json.loads(match.group(1).replace("'", '"'))
    except ValueError:
        return None


def read_answer(text: str, num_frames: int, width: int, height: int, size: int = 560) -> VeasonAnswer:
    """The policy's text -> keyframe and boxes in the width x height video of num_frames frames (see module doc)."""
    keyframe, boxes = parse_veason_answer(text, width, height, size)
    parse_ok = (keyframe, boxes) != FALLBACK
    clipped = not 0 <= keyframe < num_frames
    return VeasonAnswer(min(max(keyframe, 0), num_frames - 1), boxes, answer_data(text), parse_ok, clipped)


def prepare_video(sam, frames: np.ndarray, cache_frames: int = CACHE_FRAMES):
    """SAM2's view of a video uint8[T, H, W, 3]: `sam.prepare` (every frame's features cached) up to `cache_frames`
    frames, else the preprocessed frames alone, whose features the official predictor then computes frame by frame
    keeping only the latest (the same masks, less memory, more compute per object)."""
    if len(frames) <= cache_frames:
        return sam.prepare(frames)
    from vrsjax.services.sam2 import Video, as_frames

    frames = as_frames(frames)
    return Video(sam.preprocess(frames), frames.shape[1], frames.shape[2], features={})


def segment(sam, frames, keyframe: int, boxes: Sequence[Sequence[int]]) -> np.ndarray:
    """bool[T, H, W]: every box prompted on the keyframe, tracked forward then backward, objects OR-ed; the objects
    go through each frame as one batch (`propagate_group`).
    frames: uint8[T, H, W, 3] or a `Video` from `sam.prepare` (reused across queries on one video)."""
    from vrsjax.services.sam2 import Video

    video = frames if isinstance(frames, Video) else sam.prepare(frames)
    request = {"keyframe": keyframe, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4)}
    return sam.propagate_group(video, [request])[0]


def run(policy, sam, frames: np.ndarray, query: str, config: VeasonConfig = VeasonConfig()) -> InferenceResult:
    """One video uint8[T, H, W, 3] and one query -> `InferenceResult` (masks bool[T, H, W] at full resolution)."""
    return run_batch(policy, sam, [(frames, query)], config)[0]


def run_batch(
    policy, sam, items: Sequence[tuple[Any, str]], config: VeasonConfig = VeasonConfig(), cache: dict | None = None
) -> list[InferenceResult]:
    """Several (frames, query) pairs, their prompts answered in one greedy `generate` call. Items that share the same
    frames object (several expressions of one video) have SAM2's image features computed once; pass the same
    `cache` dict to successive calls to keep the last video's features from one call to the next."""
    shared: dict[str, float] = {}
    with timed(shared, "prompt"):
        prompts = [prompt(query, frames, config, policy.chat_template) for frames, query in items]
    with timed(shared, "generate"):
        texts = policy.answer(
            [p[0] for p in prompts], [list(p[2]) for p in prompts], max_new_tokens=config.max_new_tokens
        )
    prepared = {} if cache is None else cache
    results = []
    for (source, _), (_, frame_ids, _), (text,) in zip(items, prompts, texts, strict=True):
        timings = {k: v / len(items) for k, v in shared.items()}
        frames = np.asarray(source)
        answer = read_answer(text, len(frames), frames.shape[2], frames.shape[1], config.size)
        with timed(timings, "sam2"):
            if prepared.get("frames") is not source:  # one video's features at a time
                prepared.update(frames=source, video=prepare_video(sam, frames))
            masks = segment(sam, prepared["video"], answer.keyframe, answer.boxes)
            prepared["video"].masklets.clear()  # full-resolution logits: do not let them pile up over queries
        timings["total"] = sum(timings.values())
        results.append(
            InferenceResult(
                masks=masks,
                keyframe=answer.keyframe,
                boxes=answer.boxes,
                text=text,
                answer=answer.data,
                parse_ok=answer.parse_ok,
                frame_ids=list(frame_ids),
                timings=timings,
                details={"pipeline": "veason", "keyframe_clipped": answer.keyframe_clipped},
            )
        )
    return results
