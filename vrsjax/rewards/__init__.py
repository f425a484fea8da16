"""Reward functions of Veason-R1, VisionReasoner and VideoSeg-R1 as pure Python/numpy, and a registry by name.

`veason`, `vision_reasoner` and `videoseg` hold the score terms, each returning a float for any response
string; `registry.lookup(name)` resolves the EasyR1 `compute_score` names. Nothing here imports JAX or
torch: the SAM2 consistency term takes its propagation as a callable.
"""

from vrsjax.rewards import boxes, registry, veason, videoseg, vision_reasoner
from vrsjax.rewards.registry import lookup, register

__all__ = ["boxes", "lookup", "register", "registry", "veason", "videoseg", "vision_reasoner"]
