"""Host-side preparation of one forward pass: validation, M-RoPE positions, the vision layout, feature routing.

Everything data-dependent happens here in numpy, so the jitted forward only sees static shapes: the patch
sequence is padded to a bucket, and `vision_src[b, l]` says which merged vision feature replaces the embedding
of pad token (b, l) (-1 for text). Images come first, then videos, in order of appearance, as in HF.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from vrsjax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vrsjax.models.qwen2_5_vl.positions import get_rope_index, text_positions
from vrsjax.models.qwen2_5_vl.vision import VisionLayout, vision_layout


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class ModelInputs:
    """input_ids, attention_mask, vision_src: int32[B, L]; position_ids: int32[3, B, L];
    patches: float32[Np, C*tp*p*p] or None; layout: VisionLayout or None."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    vision_src: np.ndarray
    patches: np.ndarray | None = None
    layout: VisionLayout | None = None


def prepare_inputs(
    config: Qwen2_5_VLConfig,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    position_ids=None,
) -> ModelInputs:
    """HF-style arguments -> ModelInputs (numpy). Raises ValueError naming the inconsistent input."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    mask = np.ones_like(input_ids, np.int32) if attention_mask is None else np.asarray(attention_mask, np.int32)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {input_ids.shape}")
    vcfg = config.vision
    kinds = [
        ("image", pixel_values, image_grid_thw, config.image_token_id),
        ("video", pixel_values_videos, video_grid_thw, config.video_token_id),
    ]
    patches, grids, vision_src, offset = [], [], np.full(input_ids.shape, -1, np.int32), 0
    for name, pixels, grid, token_id in kinds:
        is_pad = (input_ids == token_id) & (mask > 0)
        if pixels is None:
            if is_pad.any():
                raise ValueError(
                    f"input_ids contain {int(is_pad.sum())} {name} pad tokens but no {name} pixels "
                    f"were given (pass pixel_values{'' if name == 'image' else '_videos'})"
                )
            continue
        pixels, grid = _check_pixels(name, pixels, grid, vcfg)
        merged = np.prod(grid, axis=1) // vcfg.spatial_merge_size**2
        _check_token_counts(name, is_pad, merged)
        vision_src[is_pad] = offset + np.arange(int(is_pad.sum()), dtype=np.int32)
        offset += int(merged.sum())
        patches.append(pixels)
        grids.append(grid)
    if position_ids is None:
        position_ids = _positions(
            config,
            input_ids,
            mask,
            image_grid_thw if pixel_values is not None else None,
            video_grid_thw if pixel_values_videos is not None else None,
            second_per_grid_ts,
        )
    inputs = ModelInputs(input_ids.astype(np.int32), mask, np.asarray(position_ids, np.int32), vision_src)
    if patches:
        grid = np.concatenate(grids)
        layout = vision_layout(grid, vcfg)
        flat = np.concatenate(patches).astype(np.float32)
        inputs.patches = np.pad(flat, ((0, layout.pos_hw.shape[0] - flat.shape[0]), (0, 0)))
        inputs.layout = layout
    return inputs


def _positions(config, input_ids, mask, image_grid, video_grid, second_per_grid_ts):
    if image_grid is None and video_grid is None:
        return text_positions(mask)
    positions, _ = get_rope_index(
        input_ids,
        mask,
        image_grid,
        video_grid,
        second_per_grid_ts,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        spatial_merge_size=config.vision.spatial_merge_size,
        tokens_per_second=config.vision.tokens_per_second,
    )
    return positions


def _check_pixels(name, pixels, grid, vcfg):
    key = "pixel_values" if name == "image" else "pixel_values_videos"
    pixels = np.asarray(pixels)
    if grid is None:
        raise ValueError(f"{key} given without {name}_grid_thw")
    grid = np.asarray(grid, np.int64).reshape(-1, 3)
    if pixels.ndim != 2 or pixels.shape[1] != vcfg.patch_dim:
        raise ValueError(
            f"{key} must be [num_patches, {vcfg.patch_dim}] (C*temporal_patch*patch*patch), got {pixels.shape}"
        )
    m = vcfg.spatial_merge_size
    bad = np.flatnonzero((grid <= 0).any(axis=1) | (grid[:, 1] % m != 0) | (grid[:, 2] % m != 0))
    if len(bad):
        raise ValueError(
            f"{name}_grid_thw row {int(bad[0])} = {grid[bad[0]].tolist()}: t, h, w must be positive "
            f"and h, w multiples of spatial_merge_size={m}"
        )
    if int(np.prod(grid, axis=1).sum()) != pixels.shape[0]:
        raise ValueError(
            f"{name}_grid_thw {grid.tolist()} describes {int(np.prod(grid, axis=1).sum())} patches "
            f"but {key} has {pixels.shape[0]} rows; grids and pixels come from different batches?"
        )
    return pixels, grid


def _check_token_counts(name: str, is_pad: np.ndarray, merged: np.ndarray) -> None:
    """Each sample's pad tokens must cover whole images/videos, in order (HF's "features and tokens" check)."""
    per_sample = is_pad.sum(axis=1)
    boundaries = set(np.cumsum(np.concatenate([[0], merged])).tolist())
    seen = 0
    for b, count in enumerate(per_sample.tolist()):
        seen += count
        if seen not in boundaries or (b == len(per_sample) - 1 and seen != int(merged.sum())):
            expected = min((x for x in boundaries if x >= seen - count and x != seen - count), default=None)
            raise ValueError(
                f"sample {b}: {count} {name} pad tokens do not match the {name} features (this sample should "
                f"have {None if expected is None else expected - (seen - count)} to cover the next {name}; "
                f"{int(per_sample.sum())} pad tokens in the batch vs {int(merged.sum())} features). The prompt was "
                f"probably truncated (raise max_prompt_length) or max_pixels is too large for it."
            )
