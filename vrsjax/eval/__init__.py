"""Evaluation: segmentation metrics (J, F, R, accuracy, gIoU, cIoU) and the benchmarks' protocols."""

from vrsjax.eval import metrics

__all__ = ["metrics"]
