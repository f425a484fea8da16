"""The reward wiring of the GRPO trainer: the Veason-R1 reward per response, and the propagators of its consistency
term (SAM2 alone, or SAM2 on the keyframe then XMem), built from services handed in.

A reward here scores one response of one training sample (any object with `frames`, `frame_ids`, `gt_masks`,
`gt_boxes` and `sample_id`, e.g. `vrsjax.rl.trainer.GRPOSample`). `score_groups` scores the trainer's rows group by
group: a reward that has a `score_group` method (`VeasonReward`) scores a group's n responses together, so that a
propagator with a `group` method (`SAM2Propagator`) tracks every response's objects in one batched SAM2 call
(`SAM2Service.propagate_group`). Nothing here imports JAX or torch: the services come in built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vrsjax.rewards import veason

RewardFn = Callable[[str, Any], dict[str, float]]
"""(response, sample) -> the reward's components {name: weighted value}."""


class SAM2Propagator:
    """Per sample, SAM2 over the sample's frames, each sample's frames encoded once (`SAM2Service.prepare`) and
    reused by all n responses of its group; the `cache_size` most recent samples are kept.

    `propagator(sample)` is a `propagate(keyframe_position, boxes) -> bool[T, H, W]` for one response;
    `propagator.group(sample, jobs)` tracks the jobs [(keyframe_position, boxes float[K, 4])] of a whole group in one
    batched call and returns their masks in order.
    """

    def __init__(self, service: Any, cache_size: int = 64) -> None:
        self.service, self.cache_size = service, cache_size
        self._prepared: dict[str, Any] = {}

    def video(self, sample: Any) -> Any:
        if sample.sample_id not in self._prepared:
            if len(self._prepared) >= self.cache_size:
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[sample.sample_id] = self.service.prepare(sample.frames)
        return self._prepared[sample.sample_id]

    def group(self, sample: Any, jobs: Sequence[tuple[int, Any]]) -> list[np.ndarray]:
        requests = [{"keyframe": k, "boxes": np.asarray(b, np.float32).reshape(-1, 4)} for k, b in jobs]
        return self.service.propagate_group(self.video(sample), requests) if requests else []

    def __call__(self, sample: Any) -> Callable[[int, Any], np.ndarray]:
        return lambda keyframe, boxes: self.group(sample, [(keyframe, boxes)])[0]


def sam2_propagate_for(service: Any, cache_size: int = 64) -> SAM2Propagator:
    """SAM2 as the consistency term's propagator (see `SAM2Propagator`)."""
    return SAM2Propagator(service, cache_size)


def xmem_propagate_for(sam: Any, xmem: Any, masks_from_probs: Callable) -> Callable[[Any], Callable]:
    """VideoSeg-R1's propagation: SAM2 segments the keyframe from the boxes (one mask per box), XMem carries the
    masks forward and backward through the sample's frames; objects OR-ed -> bool[T, H, W]. (`masks_from_probs`
    comes from `vrsjax.services.xmem`, passed in so this module never imports torch.)"""

    def for_sample(sample: Any) -> Callable:
        def propagate(keyframe: int, boxes) -> np.ndarray:
            frames = np.asarray(sample.frames)
            masks = sam.segment_image(frames[keyframe], boxes=np.asarray(boxes, np.float32), per_object=True)
            probs = xmem.propagate(frames, masks.reshape(-1, *frames.shape[1:3]), keyframe)
            return masks_from_probs(probs, union=True)

        return propagate

    return for_sample


class VeasonReward:
    """The Veason-R1 reward per response -> its components, each times its `<name>_weight` (default 1); without a
    propagator the consistency term is 0 (ablation). `score_group` scores a group's responses with one call to the
    propagator's `group` when it has one (the same masks as response by response, up to SAM2's float rounding)."""

    def __init__(self, propagate_for: Callable[[Any], Callable] | None = None, **weights: float) -> None:
        self.propagate_for, self.weights = propagate_for, weights

    def __call__(self, response: str, sample: Any) -> dict[str, float]:
        return self._components(response, sample, self.propagate_for(sample) if self.propagate_for else None)

    def score_group(self, responses: Sequence[str], sample: Any) -> list[dict[str, float]]:
        group = getattr(self.propagate_for, "group", None)
        if group is None:
            return [self(response, sample) for response in responses]
        jobs: list[list[tuple[int, Any]]] = []
        for response in responses:  # a first pass only listens for the job each response asks SAM2 for
            asked: list[tuple[int, Any]] = []
            self._components(response, sample, lambda k, b, asked=asked: asked.append((k, b)))
            jobs.append(asked[:1])
        masks = iter(group(sample, [job[0] for job in jobs if job]))
        answers = [next(masks) if job else None for job in jobs]
        return [
            self._components(response, sample, lambda k, b, m=mask: m)
            for response, mask in zip(responses, answers, strict=True)
        ]

    def _components(self, response: str, sample: Any, propagate: Callable | None) -> dict[str, float]:
        parts = veason.score_components(
            response,
            sample.gt_masks,
            sample.gt_boxes,
            sample.frame_ids,
            propagate,
            use_consistency=propagate is not None,
        )
        return {k: v * self.weights.get(f"{k}_weight", 1.0) for k, v in parts.items()}


def veason_reward(propagate_for: Callable[[Any], Callable] | None = None, **weights: float) -> VeasonReward:
    """The Veason-R1 reward (see `VeasonReward`)."""
    return VeasonReward(propagate_for, **weights)


def score_groups(reward_fn: RewardFn, texts: Sequence[str], samples: Sequence[Any], n: int) -> list[dict[str, float]]:
    """Reward components of every row (row i answers samples[i // n]), a group at a time when the reward can."""
    parts: list[dict[str, float]] = []
    for g, sample in enumerate(samples):
        group = list(texts[g * n : (g + 1) * n])
        if hasattr(reward_fn, "score_group"):
            parts.extend(reward_fn.score_group(group, sample))
        else:
            parts.extend(reward_fn(text, sample) for text in group)
    return parts
