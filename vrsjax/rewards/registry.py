"""Reward functions by name, so that an EasyR1 `worker.reward.compute_score: <name>` resolves to a vrsjax score.

An entry is a score function plus keyword config (weights, ablation switches); `lookup(name, **overrides)`
returns the function with that config bound. The built-in names are those of the original configs:
`video_match_keyframe_sft_sam_mod` (Veason-R1), its ablations as registered in the Veason-R1 fork's
`verl/workers/reward/custom.py`, `vision_reasoner` (Seg-Zero) and `videoseg_r1` (ours; VideoSeg-R1 ships no
code).
"""

import functools
from collections.abc import Callable
from typing import Any

from vrsjax.rewards import veason, videoseg, vision_reasoner

_REGISTRY: dict[str, tuple[Callable[..., float], dict[str, Any]]] = {}


def register(name: str, fn: Callable[..., float], **config: Any) -> Callable[..., float]:
    """Registers `fn` under `name` with default keyword `config`; returns fn. A taken name raises ValueError."""
    if name in _REGISTRY:
        raise ValueError(f"reward {name!r} is already registered; pick another name or unregister it first")
    _REGISTRY[name] = (fn, dict(config))
    return fn


def unregister(name: str) -> None:
    """Removes `name` (KeyError if absent)."""
    del _REGISTRY[name]


def lookup(name: str, **overrides: Any) -> Callable[..., float]:
    """The score function registered as `name` with its config, updated by `overrides`, bound as keywords."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    fn, config = _REGISTRY[name]
    return functools.partial(fn, **{**config, **overrides})


def config(name: str) -> dict[str, Any]:
    """A copy of the keyword config registered with `name`."""
    return dict(lookup(name).keywords)


def names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


register("video_match_keyframe_sft_sam_mod", veason.score)
register("ablation_keyframe_sft_sam_mod_compute_score", veason.score, consistency_weight=0.0)  # no SAM2 term
register("ablation_no_keyframe_reward", veason.score, keyframe_weight=0.0)
register("ablation_keyframe_sft_only_sam", veason.score, spatial_weight=0.0)  # SAM2 term without box IoU
register("vision_reasoner", vision_reasoner.score)
register("videoseg_r1", videoseg.score)
