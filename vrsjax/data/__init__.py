"""Datasets as they are distributed (ReVOS, MeViS, Ref-YouTube-VOS, Ref-DAVIS17, ReasonVOS, image JSON), read into
one sample interface; a synthetic dataset in the ReVOS layout; TFDS ArrayRecord builds and grain pipelines
(`vrsjax.data.records`, `vrsjax.data.pipeline`, imported on use: they pull in tensorflow_datasets and grain).
"""

from vrsjax.data.errors import DataError, SkipLog
from vrsjax.data.formats import READERS, detect_format, open_dataset
from vrsjax.data.samples import ExpressionDataset, ExpressionSample

__all__ = ["READERS", "DataError", "ExpressionDataset", "ExpressionSample", "SkipLog", "detect_format", "open_dataset"]
