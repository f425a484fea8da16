"""Prompt + response sequences for the training passes, with each prompt's vision encoded once.

A GRPO group is n responses to one prompt of thousands of vision tokens. `PromptData` keeps one prompt's ids,
M-RoPE positions and pixels; `sequence_inputs` joins any rows (prompt index, response) into one left-padded
`ModelInputs` whose vision features are computed once per distinct prompt and routed to every row that uses it.
Response positions continue from the prompt's `max position + 1`, exactly as `get_rope_index` numbers text after
the prompt, so these inputs give the same logits as running the concatenated tokens through the model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vrsjax.models.qwen2_5_vl.inputs import ModelInputs, prepare_inputs
from vrsjax.models.qwen2_5_vl.rows import stack_vision
from vrsjax.models.qwen2_5_vl.vision import bucket, vision_layout
from vrsjax.processing.processor import MODEL_KEYS


@dataclasses.dataclass
class PromptData:
    """One prompt, unpadded. ids, vision_src: int32[L]; positions: int32[3, L]; patches: float32[P, D] (images
    then videos); grids: int[G, 3]; next_pos: the first response position."""

    ids: np.ndarray
    positions: np.ndarray
    vision_src: np.ndarray
    patches: np.ndarray | None
    grids: np.ndarray | None
    next_pos: int


def prompt_data(config, batch: dict) -> PromptData:
    """A processor batch holding ONE prompt -> PromptData (padding removed)."""
    inputs = prepare_inputs(config, **{k: v for k, v in batch.items() if k in MODEL_KEYS})
    keep = inputs.attention_mask[0] > 0
    grids = [
        np.asarray(batch[k]).reshape(-1, 3) for k in ("image_grid_thw", "video_grid_thw") if batch.get(k) is not None
    ]
    n_patches = sum(int(np.prod(g, axis=1).sum()) for g in grids)
    positions = inputs.position_ids[:, 0, keep]
    return PromptData(
        ids=inputs.input_ids[0, keep],
        positions=positions,
        vision_src=inputs.vision_src[0, keep],
        patches=None if inputs.patches is None else inputs.patches[:n_patches],
        grids=np.concatenate(grids) if grids else None,
        next_pos=int(positions.max()) + 1,
    )


def sequence_inputs(
    config, prompts: list[PromptData], rows: np.ndarray, tokens: np.ndarray, mask: np.ndarray
) -> ModelInputs:
    """rows: int[N] prompt index per sequence; tokens, mask: int[N, T] responses -> ModelInputs [N, L + T].

    The prompt part is left-padded to a bucketed length L, so the response starts at column L for every row."""
    length = bucket(max(len(prompts[r].ids) for r in rows), 8)
    n, t = tokens.shape
    ids = np.zeros((n, length + t), np.int32)
    att = np.zeros((n, length + t), np.int32)
    pos = np.zeros((3, n, length + t), np.int32)
    src = np.full((n, length + t), -1, np.int32)
    used = list(dict.fromkeys(int(r) for r in rows))  # distinct prompts, in order of first use
    offsets, patches, grids, offset = {}, [], [], 0
    for r in used:
        offsets[r] = offset
        if prompts[r].patches is not None:
            patches.append(prompts[r].patches)
            grids.append(prompts[r].grids)
            offset += int(np.prod(prompts[r].grids, axis=1).sum()) // config.vision.spatial_merge_size**2
    for i, r in enumerate(rows):
        p = prompts[r]
        start = length - len(p.ids)
        ids[i, start:length], att[i, start:length] = p.ids, 1
        pos[:, i, start:length] = p.positions
        src[i, start:length] = np.where(p.vision_src >= 0, p.vision_src + offsets[int(r)], -1)
        ids[i, length:] = np.where(mask[i] > 0, tokens[i], 0)
        att[i, length:] = mask[i]
        pos[:, i, length:] = p.next_pos + np.arange(t)
    inputs = ModelInputs(ids, att, pos, src)
    if patches:
        layout = vision_layout(np.concatenate(grids), config.vision)
        flat = np.concatenate(patches)
        inputs.patches = np.pad(flat, ((0, layout.pos_hw.shape[0] - flat.shape[0]), (0, 0)))
        inputs.layout = layout
    return inputs


def prompt_inputs(config, prompts: list[PromptData], rows: np.ndarray) -> ModelInputs:
    """rows: int[R] prompt index per row (repeats allowed) -> the prompts alone as ModelInputs [R, L], left-padded,
    each row with its own prompt's vision (`float[R, P, C]` patches, `rows.stack_vision`): rows placed on a device
    take their vision tower with them, and a prompt on several rows is encoded on each."""
    length = bucket(max(len(prompts[r].ids) for r in rows), 8)
    n = len(rows)
    ids = np.zeros((n, length), np.int32)
    att = np.zeros((n, length), np.int32)
    pos = np.zeros((3, n, length), np.int32)
    src = np.full((n, length), -1, np.int32)
    for i, r in enumerate(rows):
        p = prompts[r]
        start = length - len(p.ids)
        ids[i, start:], att[i, start:], pos[:, i, start:], src[i, start:] = p.ids, 1, p.positions, p.vision_src
    patches, layout = stack_vision(config, [(prompts[r].patches, prompts[r].grids) for r in rows])
    return ModelInputs(ids, att, pos, src, patches, layout)
