"""XMem's inference options under the official names and with the official defaults (hkchengrex/XMem `eval.py`).

`XMemConfig(**overrides)` validates at construction and names the bad key. `enable_long_term_count_usage` is left
`None` by default and then decided per video as `eval.py` does (count usage only when the video is long enough for
the long-term memory to fill up); `disable_long_term=True` is accepted as eval.py's flag for `enable_long_term=False`.
Two options of eval.py's data pipeline are kept: `size` (resize the shorter side before inference and resize the
probabilities back; -1, the default here, runs at the frames' own resolution as `InferenceCore` does, eval.py's
default is 480) and `flip` (horizontal flip test).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

INT_OPTIONS = (
    "mem_every",
    "deep_update_every",
    "max_mid_term_frames",
    "min_mid_term_frames",
    "max_long_term_elements",
    "num_prototypes",
    "size",
)


@dataclass(frozen=True)
class XMemConfig:
    """top_k: memory elements each query pixel reads; mem_every: a memory frame every that many frames;
    deep_update_every: -1 deep-updates the hidden state on memory frames, n > 0 every n frames; the long-term memory
    consolidates when the working memory holds max_mid_term_frames frames, down to min_mid_term_frames, into
    num_prototypes prototypes, and holds at most max_long_term_elements (pruning the least used when counting usage).
    """

    top_k: int | None = 30
    mem_every: int = 5
    deep_update_every: int = -1
    enable_long_term: bool = True
    enable_long_term_count_usage: bool | None = None
    max_mid_term_frames: int = 10
    min_mid_term_frames: int = 5
    max_long_term_elements: int = 10000
    num_prototypes: int = 128
    size: int = -1
    flip: bool = False

    def __post_init__(self):
        for name in INT_OPTIONS:
            # numpy integers are accepted and stored as Python ints (frozen: hence object.__setattr__).
            object.__setattr__(self, name, _check_int(name, getattr(self, name)))
        for name in ("enable_long_term", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"XMem option {name} must be a bool, got {getattr(self, name)!r}")
        if self.enable_long_term_count_usage not in (None, True, False):
            raise TypeError("XMem option enable_long_term_count_usage must be a bool or None (decided per video)")
        if self.top_k is not None:
            object.__setattr__(self, "top_k", _check_int("top_k", self.top_k))
            if self.top_k < 1:
                raise ValueError(f"XMem option top_k must be >= 1 (or None for a full softmax), got {self.top_k}")
        if self.mem_every < 1:
            raise ValueError(f"XMem option mem_every must be >= 1, got {self.mem_every}")
        if self.size != -1 and self.size < 16:
            raise ValueError(f"XMem option size must be -1 (keep the resolution) or >= 16, got {self.size}")
        if self.enable_long_term:
            self._check_long_term()

    def _check_long_term(self):
        if self.min_mid_term_frames < 1 or self.max_mid_term_frames <= self.min_mid_term_frames:
            raise ValueError(
                "XMem options need 1 <= min_mid_term_frames < max_mid_term_frames with long-term memory, got "
                f"min {self.min_mid_term_frames}, max {self.max_mid_term_frames} (or pass enable_long_term=False)"
            )
        if self.num_prototypes < 1 or self.max_long_term_elements <= self.num_prototypes:
            raise ValueError(
                "XMem options need 1 <= num_prototypes < max_long_term_elements with long-term memory, got "
                f"num_prototypes {self.num_prototypes}, max_long_term_elements {self.max_long_term_elements}"
            )

    @classmethod
    def from_overrides(cls, **overrides) -> XMemConfig:
        """The defaults with official-named overrides; an unknown name is an error that lists the known ones."""
        if "disable_long_term" in overrides:
            disable = overrides.pop("disable_long_term")
            if "enable_long_term" in overrides and overrides["enable_long_term"] == bool(disable):
                raise ValueError("XMem options disable_long_term and enable_long_term contradict each other")
            overrides["enable_long_term"] = not disable
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TypeError(f"unknown XMem option(s) {unknown}: the options are {known} and disable_long_term")
        return cls(**overrides)

    def for_video(self, frames: int) -> XMemConfig:
        """Decide enable_long_term_count_usage for a video of `frames` frames as eval.py does, unless it is set:
        count usage only when `frames / (max - min) * num_prototypes >= max_long_term_elements`."""
        if self.enable_long_term_count_usage is not None:
            return self
        count = self.enable_long_term and (
            frames / (self.max_mid_term_frames - self.min_mid_term_frames) * self.num_prototypes
            >= self.max_long_term_elements
        )
        return dataclasses.replace(self, enable_long_term_count_usage=bool(count))


def _check_int(name: str, value) -> int:
    """`value` as an int; raise unless it is an integer (Python or numpy; bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"XMem option {name} must be an int, got {value!r}")
    return int(value)
