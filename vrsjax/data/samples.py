"""The sample interface every reader yields: one frozen `ExpressionSample` per referring/reasoning expression
(video id, frame paths, expression text, object and annotation ids, type, lazily decoded masks), and
`ExpressionDataset`, the indexed list of them with the skip report of its reader. Images are one-frame videos.

Masks are decoded only when asked: `union_masks` (what Veason-R1 trains on, a bitwise OR of the objects) or
`object_masks` (per object), over all frames or the given frame indices. Frames decode with PIL and, when a
size is given, resize with PIL bilinear as Veason-R1 does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from vrsjax.data.errors import SkipLog
from vrsjax.data.masks import combine

TYPE_NAMES = {0: "referring", 1: "reasoning", 2: "no_target"}


class MaskSource(Protocol):
    def object_masks(self, frame_ids: Sequence[int]) -> np.ndarray: ...


@dataclass(frozen=True)
class ExpressionSample:
    """One expression of one video. Shapes: T = len(frame_paths), K = len(obj_ids), H x W = height x width.

    type_id: 0 referring, 1 reasoning, 2 no target (ReVOS); None where the format has no type.
    masks: None when the split ships no ground truth (Ref-YouTube-VOS valid, MeViS valid).
    extra: format-specific fields (category, source, is_sent, annotator, ...).
    """

    dataset: str
    video: str
    exp_id: str
    expression: str
    frame_names: tuple[str, ...]
    frame_paths: tuple[str, ...]
    obj_ids: tuple[int, ...]
    anno_ids: tuple[str, ...]
    type_id: int | None
    height: int
    width: int
    masks: MaskSource | None = field(default=None, repr=False, compare=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def key(self) -> str:
        """'<video>/<exp_id>': unique within a dataset split."""
        return f"{self.video}/{self.exp_id}"

    def _frame_ids(self, frame_ids: Sequence[int] | None) -> list[int]:
        ids = list(range(self.num_frames)) if frame_ids is None else [int(t) for t in frame_ids]
        bad = [t for t in ids if not 0 <= t < self.num_frames]
        if bad:
            raise IndexError(f"{self.dataset} {self.key}: frame indices {bad} outside [0, {self.num_frames})")
        return ids

    def object_masks(self, frame_ids: Sequence[int] | None = None) -> np.ndarray:
        """uint8[T', K, H, W] per-object masks at frame_ids (all frames when None)."""
        if self.masks is None:
            raise ValueError(f"{self.dataset} {self.key}: this split has no ground-truth masks")
        return self.masks.object_masks(self._frame_ids(frame_ids))

    def union_masks(self, frame_ids: Sequence[int] | None = None, mode: str = "union") -> np.ndarray:
        """uint8[T', H, W]: the objects OR-ed ("union", training) or added ("sum", VISA's ReVOS evaluation)."""
        return combine(self.object_masks(frame_ids), mode)

    def read_frames(self, frame_ids: Sequence[int] | None = None, size: int | None = None) -> np.ndarray:
        """uint8[T', H, W, 3] RGB frames; with size, each resized to size x size with PIL bilinear."""
        return np.stack([read_frame(self.frame_paths[t], size) for t in self._frame_ids(frame_ids)])


def read_frame(source: Any, size: int | None = None) -> np.ndarray:
    """uint8[H, W, 3] from a path or a file object; size: resize to size x size (PIL bilinear), as Veason-R1."""
    with Image.open(source) as image:
        image = image.convert("RGB")
        if size is not None:
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)


@dataclass(frozen=True)
class ExpressionDataset(Sequence):
    """The expressions of one dataset split, in the reader's order, with what the reader skipped."""

    name: str
    root: str
    split: str
    samples: tuple[ExpressionSample, ...]
    skipped: SkipLog

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # noqa: ANN001 - Sequence protocol (int or slice)
        return self.samples[index]

    def __iter__(self) -> Iterator[ExpressionSample]:
        return iter(self.samples)

    @property
    def videos(self) -> list[str]:
        """Video ids in first-seen order."""
        return list(dict.fromkeys(s.video for s in self.samples))

    def filter(self, keep) -> ExpressionDataset:  # noqa: ANN001 - a predicate on ExpressionSample
        return ExpressionDataset(
            self.name, self.root, self.split, tuple(s for s in self.samples if keep(s)), self.skipped
        )
