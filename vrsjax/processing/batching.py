"""Left padding to length buckets, prompt-length limits, and M-RoPE positions for a batch.

Jitted code compiles once per input shape, so a batch is padded to a bucket: the smallest power of two (or the
smallest configured length) that holds its longest prompt. Padding goes on the left, the only layout batched
generation supports. A prompt over `max_prompt_length` is never truncated (cutting vision tokens breaks the
features-to-tokens match): it raises an error naming the sample and both lengths, or, with `overflow="skip"`,
is dropped from the batch and counted in `LengthReport`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class PromptTooLongError(ValueError):
    """A prompt is longer than `max_prompt_length`; the message names the sample and both lengths."""


@dataclasses.dataclass
class LengthReport:
    """Samples dropped for length (only with overflow='skip'): (sample id, prompt length) pairs."""

    max_prompt_length: int | None = None
    skipped: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def bucket_length(length: int, buckets: str | list[int] | None = "pow2", minimum: int = 16) -> int:
    """Padded length for a batch whose longest row has `length` tokens: 'pow2' (>= minimum), a sorted list of
    allowed lengths, or None (no bucketing)."""
    if buckets is None:
        return length
    if buckets == "pow2":
        return max(minimum, 1 << max(length - 1, 0).bit_length())
    fits = [b for b in sorted(buckets) if b >= length]
    if not fits:
        raise ValueError(f"a prompt of {length} tokens is longer than the largest bucket {max(buckets)}; add a bucket")
    return fits[0]


def check_lengths(
    lengths: list[int], max_prompt_length: int | None, sample_ids: list[str], overflow: str = "error"
) -> tuple[list[int], LengthReport]:
    """-> (indices of the samples to keep, report). overflow: 'error' raises PromptTooLongError, 'skip' drops."""
    if overflow not in ("error", "skip"):
        raise ValueError(f"overflow must be 'error' or 'skip', got {overflow!r}")
    report = LengthReport(max_prompt_length)
    keep = []
    for i, (sample, n) in enumerate(zip(sample_ids, lengths, strict=True)):
        if max_prompt_length is None or n <= max_prompt_length:
            keep.append(i)
        elif overflow == "skip":
            report.skipped.append((sample, n))
        else:
            raise PromptTooLongError(
                f"sample {sample}: the prompt has {n} tokens but max_prompt_length is {max_prompt_length}; vision "
                f"tokens are never truncated. Lower max_pixels / the frame count, raise max_prompt_length, or pass "
                f"overflow='skip' to drop such samples"
            )
    return keep, report


def pad_left(rows: list[list[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (int64[B, length] ids, int64[B, length] attention mask) with each row right-aligned."""
    ids = np.full((len(rows), length), pad_id, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for b, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"row {b} has {len(row)} tokens, more than the padded length {length}")
        if row:
            ids[b, length - len(row) :] = row
            mask[b, length - len(row) :] = 1
    return ids, mask


def pad_right(rows: list[list[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (int64[B, length] ids, int64[B, length] attention mask) with each row left-aligned (for SFT/responses)."""
    ids = np.full((len(rows), length), pad_id, np.int64)
    mask = np.zeros((len(rows), length), np.int64)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return ids, mask


def batch_positions(
    batch: dict, image_token_id: int, video_token_id: int, merge_size: int = 2, tokens_per_second: float = 2
) -> tuple[np.ndarray, np.ndarray]:
    """-> (int32[3, B, L] M-RoPE position ids, int32[B] rope deltas) of a processor batch (HF key names)."""
    from vrsjax.models.qwen2_5_vl.positions import get_rope_index  # imported here: the models package loads jax

    return get_rope_index(
        batch["input_ids"],
        batch.get("attention_mask"),
        batch.get("image_grid_thw"),
        batch.get("video_grid_thw"),
        batch.get("second_per_grid_ts"),
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        spatial_merge_size=merge_size,
        tokens_per_second=tokens_per_second,
    )
