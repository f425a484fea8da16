"""Vision per row: each row of a batch carries its own prompt's patches, so splitting rows over devices splits the
vision work with them.

`prepare_inputs` concatenates every image of a batch into one patch sequence (`patches: float[Np, C]`) that the
tower runs once; a sharded step cannot split that sequence by row, so every device would run the whole tower. Here
`patches` is `float[B, P, C]` (row b's images, padded to one length P), every `VisionLayout` array leads with B, and
`vision_src[b]` indexes row b's own merged features; `Qwen2_5_VLForConditionalGeneration.embed` then runs the tower
per row (vmap), and a batch sharded over the mesh's batch axes runs each row's tower on the row's device. A prompt
repeated on several rows is encoded once per row (the price of splitting its responses, see docs/scaling.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vrsjax.models.qwen2_5_vl.inputs import ModelInputs
from vrsjax.models.qwen2_5_vl.vision import VisionLayout, vision_layout


def stack_vision(config, per_row: list) -> tuple[np.ndarray | None, VisionLayout | None]:
    """[(patches float[P_b, C] or None, grids int[G_b, 3] or None), ...] for B rows -> (float32[B, P, C],
    VisionLayout with [B, ...] arrays), every row padded to the largest; (None, None) when no row has vision."""
    vcfg = config.vision
    if all(p is None for p, _ in per_row):
        return None, None
    layouts = [None if g is None else vision_layout(g, vcfg) for _, g in per_row]
    real = [x for x in layouts if x is not None]
    n_pad = max(x.pos_hw.shape[0] for x in real)
    window = max(x.window_slots.shape[0] for x in real), real[0].window_slots.shape[1]
    frame = max(x.frame_slots.shape[0] for x in real), max(x.frame_slots.shape[1] for x in real)
    padded = [_pad_layout(x, n_pad, window, frame) for x in layouts]
    patches = np.zeros((len(per_row), n_pad, vcfg.patch_dim), np.float32)
    for b, (p, _) in enumerate(per_row):
        if p is not None:
            patches[b, : len(p)] = p
    stacked = VisionLayout(*(np.stack([getattr(x, f.name) for x in padded]) for f in dataclasses.fields(VisionLayout)))
    return patches, stacked


def _pad_layout(layout: VisionLayout | None, n_pad: int, window: tuple, frame: tuple) -> VisionLayout:
    """One row's layout grown to `n_pad` patches and (rows, slots) blocks; None (a row without vision) is all empty."""
    old = 0 if layout is None else layout.pos_hw.shape[0]
    pos = np.zeros((n_pad, 2), np.int32)
    if layout is not None:
        pos[:old] = layout.pos_hw

    def blocks(slots, shape):
        out = np.full(shape, n_pad, np.int32)
        inv = np.full((n_pad,), shape[0] * shape[1], np.int32)
        if slots is not None:
            r, c = np.nonzero(slots < old)  # filled slots keep their (block, slot); a patch's flat slot follows
            out[r, c] = slots[r, c]
            inv[slots[r, c]] = r * shape[1] + c
        return out, inv

    window_slots, window_inv = blocks(None if layout is None else layout.window_slots, window)
    frame_slots, frame_inv = blocks(None if layout is None else layout.frame_slots, frame)
    return VisionLayout(pos, window_slots, window_inv, frame_slots, frame_inv)


def per_row_vision(config, inputs: ModelInputs, grids: np.ndarray | None) -> ModelInputs:
    """Flat-vision inputs (as `prepare_inputs` builds them; `grids` int[G, 3] of all images then videos, in the
    patches' order) -> the same inputs with vision per row (`stack_vision`); text-only inputs come back as they are."""
    if inputs.patches is None:
        return inputs
    grids = np.asarray(grids, np.int64).reshape(-1, 3)
    sizes = np.prod(grids, axis=1)
    merged = sizes // config.vision.spatial_merge_size**2
    first_patch, first_merged = np.cumsum(sizes) - sizes, np.cumsum(merged) - merged
    owner = np.repeat(np.arange(len(grids)), merged)  # image of each merged feature
    src = np.full_like(inputs.vision_src, -1)
    per_row = []
    for b, row_src in enumerate(inputs.vision_src):
        used = np.unique(owner[row_src[row_src >= 0]])
        if len(used) == 0:
            per_row.append((None, None))
            continue
        local = np.full(int(merged.sum()), -1, np.int32)  # global merged index -> index within this row's images
        offset = 0
        for i in used:
            local[first_merged[i] : first_merged[i] + merged[i]] = offset + np.arange(merged[i])
            offset += int(merged[i])
        src[b] = np.where(row_src >= 0, local[np.maximum(row_src, 0)], -1)
        patches = np.concatenate([inputs.patches[first_patch[i] : first_patch[i] + sizes[i]] for i in used])
        per_row.append((patches, grids[used]))
    patches, layout = stack_vision(config, per_row)
    return dataclasses.replace(inputs, vision_src=src, patches=patches, layout=layout)


def take_rows(inputs: ModelInputs, rows: np.ndarray) -> ModelInputs:
    """Rows `rows` (int[R], repeats allowed) of per-row inputs -> ModelInputs [R, L]."""
    layout = inputs.layout
    if layout is not None:
        layout = VisionLayout(*(getattr(layout, f.name)[rows] for f in dataclasses.fields(VisionLayout)))
    return ModelInputs(
        inputs.input_ids[rows],
        inputs.attention_mask[rows],
        inputs.position_ids[:, rows],
        inputs.vision_src[rows],
        None if inputs.patches is None else inputs.patches[rows],
        layout,
    )


def is_per_row(inputs: ModelInputs) -> bool:
    """True when the patches are per row (float[B, P, C]) rather than one flat sequence."""
    return inputs.patches is not None and np.ndim(inputs.patches) == 3


__all__ = ["is_per_row", "per_row_vision", "stack_vision", "take_rows"]
