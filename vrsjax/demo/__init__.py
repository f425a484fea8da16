"""`vrsjax demo`: both training stages of Veason-R1 end to end on a laptop CPU, on an embedded default only.

`world` builds everything from a seed (synthetic videos, prompts, a tiny checkpoint with its own BPE, CoT SFT
conversations), `pipeline` runs CoT SFT then GRPO and decides the learning check, `measure` evaluates held-out
expressions (J&F with ground-truth-free segmenters, keyframe box IoU) and draws the plots and overlays.
"""

from vrsjax.demo.pipeline import JF_GOAL, QUICK, DemoSettings, run

__all__ = ["JF_GOAL", "QUICK", "DemoSettings", "run"]
