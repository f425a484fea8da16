"""End-to-end video -> masks: Veason-R1's keyframe-first pipeline (`veason`), VideoSeg-R1's hierarchical sampler with
SAM2 + XMem (`videoseg`), the policy wrapper they share (`Policy`), video IO (`read_video`), the segmenter options
(`SegmenterOptions`), `vrsjax infer` (`infer`) and `vrsjax predict` (`predict`). Names load on first use, so the
command line's parser stays fast; importing this package never imports torch (building a segmenter does).
"""

import importlib

_EXPORTS = {
    "InferenceResult": "vrsjax.inference.result",
    "Policy": "vrsjax.inference.policy",
    "PredictReport": "vrsjax.inference.predict_split",
    "SegmenterOptions": "vrsjax.inference.segmenters",
    "VeasonConfig": "vrsjax.inference.veason",
    "Video": "vrsjax.inference.video",
    "VideoSegConfig": "vrsjax.inference.videoseg",
    "check_checkpoint": "vrsjax.inference.policy",
    "infer": "vrsjax.inference.infer_video",
    "predict": "vrsjax.inference.predict_split",
    "read_video": "vrsjax.inference.video",
}
_MODULES = ("veason", "videoseg")

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"vrsjax.inference.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vrsjax.inference' has no attribute {name!r}")
