"""Batched SAM2 tracking: every object of a group of requests goes through each frame's memory attention, mask decoder
and memory encoder in one batch, each object keeping its own memory bank and prompt history.

The official video predictor (sam2 1.1.0) tracks one object at a time: per object and frame it assembles the object's
memories (its conditioning frame, the last `num_maskmem - 1` tracked frames, the object pointers of up to
`max_obj_ptrs_in_encoder - 1` earlier frames), fuses them into the frame's features by memory attention, decodes the
mask and encodes it into a new memory. Here the objects tracked through a frame run as a batch: the memories of each
object are assembled as sam2 assembles them, padded to the longest in the batch with a key mask, and the batch goes
through the model's own modules; the first self-attention, identical for all objects of a frame, runs once. Objects
are tracked forward from their keyframes over the whole video first, then backward (the backward pass of an object
attends to its forward memories, as in the official forward-then-reverse call sequence), so requests with different
keyframes share frames in both directions. Each object's keyframe (the prompt step) runs alone through the official
predictor, exactly. Results equal the per-object path up to float rounding (batched matrix products sum in another
order; the bfloat16 memory store can round a value the other way).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from sam2.utils.misc import fill_holes_in_mask_scores

FrameFeatures = Callable[[int], tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]]
"""frame -> (vision features [(HW, 1, C)] per level, their position encodings, feature sizes [(H, W)])."""


@dataclass
class Track:
    """One object: its keyframe, its outputs per frame in sam2's layout ({"cond_frame_outputs": {keyframe: out},
    "non_cond_frame_outputs": {frame: out}}), and its mask logits float32[T, H, W] at video size, filled as tracked."""

    keyframe: int
    outputs: dict[str, dict[int, dict[str, Any]]]
    logits: torch.Tensor


def unsupported(model: Any) -> str | None:
    """Why this batched path cannot run `model`'s config exactly as sam2 does, or None when it can."""
    attention = model.memory_attention
    checks = {
        "num_maskmem > 0": model.num_maskmem > 0,
        "use_obj_ptrs_in_encoder": model.use_obj_ptrs_in_encoder,
        "add_tpos_enc_to_obj_ptrs": model.add_tpos_enc_to_obj_ptrs,
        "not non_overlap_masks": not model.non_overlap_masks,
        "not non_overlap_masks_for_mem_enc": not model.non_overlap_masks_for_mem_enc,
        "not clear_non_cond_mem_around_input": not model.clear_non_cond_mem_around_input,
        "memory_attention.batch_first": attention.batch_first,
        "rotary cross-attention": all(
            type(layer.cross_attn_image).__name__ == "RoPEAttention" for layer in attention.layers
        ),
        "cross-attention keys with positions, queries without": all(
            layer.pos_enc_at_cross_attn_keys and not layer.pos_enc_at_cross_attn_queries for layer in attention.layers
        ),
    }
    failed = [name for name, ok in checks.items() if not ok]
    return None if not failed else f"the batched SAM2 path needs {', '.join(failed)}"


def track(model: Any, tracks: list[Track], num_frames: int, features: FrameFeatures, size: tuple[int, int]) -> None:
    """Tracks every object of `tracks` (conditioned on its keyframe already) forward to the last frame, then backward
    to the first, batched over the objects on each frame; fills each track's logits and outputs."""
    for reverse in (False, True):
        frames = range(num_frames - 1, -1, -1) if reverse else range(num_frames)
        for t in frames:
            batch = [tr for tr in tracks if (tr.keyframe > t if reverse else tr.keyframe < t)]
            if batch:
                step(model, batch, t, reverse, num_frames, features(t), size)


def step(model: Any, batch: list[Track], t: int, reverse: bool, num_frames: int, frame: tuple, size) -> None:
    """One frame for a batch of objects: memory attention, mask decoder, memory encoder; sam2's `track_step` and
    `_run_single_frame_inference` with a batch of objects instead of one."""
    vision_feats, vision_pos, feat_sizes = frame
    count = len(batch)
    memories = [memory_inputs(model, tr.outputs, t, reverse, num_frames) for tr in batch]
    pix_feat = memory_attention(model, vision_feats[-1], vision_pos[-1], feat_sizes[-1], memories)
    high_res = [
        x.permute(1, 2, 0).view(1, x.size(2), *s).expand(count, -1, -1, -1)
        for x, s in zip(vision_feats[:-1], feat_sizes[:-1], strict=True)
    ]
    _, _, _, low_res_masks, high_res_masks, obj_ptr, object_scores = model._forward_sam_heads(
        backbone_features=pix_feat,
        point_inputs=None,
        mask_inputs=None,
        high_res_features=high_res,
        multimask_output=model._use_multimask(False, None),
    )
    maskmem_features = maskmem_pos_enc = None
    # A memory no later frame reads (the backward pass's last frame) is not encoded.
    if not (reverse and t == 0):
        maskmem_features, maskmem_pos_enc = model._encode_new_memory(
            current_vision_feats=[x.expand(-1, count, -1) for x in vision_feats],
            feat_sizes=feat_sizes,
            pred_masks_high_res=high_res_masks,
            object_score_logits=object_scores,
            is_mask_from_pts=False,
        )
        maskmem_features = maskmem_features.to(torch.bfloat16)  # the official predictor stores memories in bf16
    pred_masks = low_res_masks
    if model.fill_hole_area > 0:
        pred_masks = fill_holes_in_mask_scores(pred_masks, model.fill_hole_area)
    video_masks = pred_masks
    if pred_masks.shape[-2:] != size:
        video_masks = F.interpolate(pred_masks, size=size, mode="bilinear", align_corners=False)
    for i, tr in enumerate(batch):
        tr.outputs["non_cond_frame_outputs"][t] = {
            "maskmem_features": None if maskmem_features is None else maskmem_features[i : i + 1],
            "maskmem_pos_enc": None if maskmem_pos_enc is None else [x[0:1] for x in maskmem_pos_enc],
            "pred_masks": pred_masks[i : i + 1],
            "obj_ptr": obj_ptr[i : i + 1],
            "object_score_logits": object_scores[i : i + 1],
        }
        tr.logits[t] = video_masks[i, 0]


@dataclass
class Memory:
    """One object's memory on one frame, as sam2 assembles it: tokens float32[L, mem_dim] and their position
    encodings (spatial memories first, then `pointer_tokens` object-pointer tokens, which get no rotary encoding)."""

    tokens: torch.Tensor
    pos: torch.Tensor
    pointer_tokens: int


def memory_inputs(model: Any, outputs: dict, t: int, reverse: bool, num_frames: int) -> Memory:
    """sam2's `_prepare_memory_conditioned_features` memory selection for one object on frame t (not its keyframe):
    conditioning frames at temporal position 0, the previous `num_maskmem - 1` tracked frames (every
    `memory_temporal_stride_for_eval`-th beyond the last), then the object pointers with their temporal encodings."""
    cond, non_cond = outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]
    selected, unselected = select_closest_cond_frames(t, cond, model.max_cond_frames_in_attn)
    spatial = [(0, out) for out in selected.values()]
    stride, sign = model.memory_temporal_stride_for_eval, -1 if reverse else 1
    for t_pos in range(1, model.num_maskmem):
        t_rel = model.num_maskmem - t_pos
        if t_rel == 1:
            prev = t - sign
        elif reverse:
            prev = -(-(t + 2) // stride) * stride + (t_rel - 2) * stride
        else:
            prev = ((t - 2) // stride) * stride - (t_rel - 2) * stride
        out = non_cond.get(prev, unselected.get(prev))
        if out is not None:
            spatial.append((t_pos, out))
    tokens, pos = [], []
    for t_pos, out in spatial:
        tokens.append(out["maskmem_features"].flatten(2)[0].t().float())
        tpos = model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1]
        pos.append(out["maskmem_pos_enc"][-1].flatten(2)[0].t() + tpos[0])
    pointers = object_pointers(model, selected, unselected, non_cond, t, reverse, num_frames)
    if pointers is not None:
        tokens.append(pointers[0])
        pos.append(pointers[1])
    pointer_tokens = 0 if pointers is None else len(pointers[0])
    return Memory(torch.cat(tokens), torch.cat(pos), pointer_tokens)


def object_pointers(model, selected, unselected, non_cond, t, reverse, num_frames):
    """(pointer tokens float32[P * C / mem_dim, mem_dim], their temporal encodings) or None when there are none."""
    C, mem_dim = model.hidden_dim, model.mem_dim
    max_ptrs = min(num_frames, model.max_obj_ptrs_in_encoder)
    cond = selected
    if not model.training and model.only_obj_ptrs_in_the_past_for_eval:
        cond = {s: out for s, out in selected.items() if (s >= t if reverse else s <= t)}
    sign = -1 if reverse else 1
    signed = model.use_signed_tpos_enc_to_obj_ptrs
    found = [((t - s) * sign if signed else abs(t - s), out["obj_ptr"]) for s, out in cond.items()]
    for t_diff in range(1, max_ptrs):
        s = t + t_diff if reverse else t - t_diff
        if s < 0 or s >= num_frames:
            break
        out = non_cond.get(s, unselected.get(s))
        if out is not None:
            found.append((t_diff, out["obj_ptr"]))
    if not found:
        return None
    positions, ptrs = zip(*found, strict=True)
    ptrs = torch.cat(ptrs)  # [P, C]
    tpos_dim = C if model.proj_tpos_enc_in_obj_ptrs else mem_dim
    obj_pos = torch.tensor(positions).to(device=ptrs.device) / (max_ptrs - 1)
    obj_pos = model.obj_ptr_tpos_proj(get_1d_sine_pe(obj_pos, dim=tpos_dim))  # [P, mem_dim]
    if mem_dim < C:  # a pointer is split into C / mem_dim tokens
        ptrs = ptrs.reshape(-1, C // mem_dim, mem_dim).flatten(0, 1)
        obj_pos = obj_pos.repeat_interleave(C // mem_dim, dim=0)
    return ptrs, obj_pos


def padded(memories: list[Memory]) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """Memories of a batch -> (tokens float32[B, S, D], positions [B, S, D], pointer tokens P, key mask bool[B, 1, 1, S]
    or None when no padding was needed). Spatial memories are padded to the longest, pointers likewise, so the last
    P tokens of every row are pointers (no rotary encoding) and padding is masked out."""
    spatial = max(len(m.tokens) - m.pointer_tokens for m in memories)
    pointers = max(m.pointer_tokens for m in memories)
    count, dim = len(memories), memories[0].tokens.shape[-1]
    like = memories[0].tokens
    tokens = like.new_zeros(count, spatial + pointers, dim)
    pos = like.new_zeros(count, spatial + pointers, dim)
    mask = torch.zeros(count, 1, 1, spatial + pointers, dtype=torch.bool, device=like.device)
    for i, m in enumerate(memories):
        n = len(m.tokens) - m.pointer_tokens
        tokens[i, :n], pos[i, :n], mask[i, 0, 0, :n] = m.tokens[:n], m.pos[:n], True
        end = spatial + m.pointer_tokens
        tokens[i, spatial:end], pos[i, spatial:end], mask[i, 0, 0, spatial:end] = m.tokens[n:], m.pos[n:], True
    return tokens, pos, pointers, None if bool(mask.all()) else mask


def memory_attention(
    model: Any, curr: torch.Tensor, curr_pos: torch.Tensor, hw: tuple[int, int], memories
) -> torch.Tensor:
    """sam2's `MemoryAttention.forward` for one frame's features curr float[HW, 1, C] (positions curr_pos) and a batch
    of objects' memories -> pix_feat float[B, C, H, W]. Objects with as many spatial memories run together, so that
    spatial padding (which costs as much as a memory) never happens; pointer padding is masked."""
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(memories):
        groups.setdefault(len(m.tokens) - m.pointer_tokens, []).append(i)
    attention = model.memory_attention
    x = curr + 0.1 * curr_pos if attention.pos_enc_at_input else curr
    x, pos = x.transpose(0, 1), curr_pos.transpose(0, 1)  # [1, HW, C]
    first = attention.layers[0]._forward_sa(x, pos)  # the first self-attention sees no memory: the same for all
    out = curr.new_empty(len(memories), *x.shape[1:])
    for rows in groups.values():
        tokens, tokens_pos, pointers, mask = padded([memories[i] for i in rows])
        y = first.expand(len(rows), -1, -1)
        for index, layer in enumerate(attention.layers):
            if index:
                y = layer._forward_sa(y, pos)
            y = y + cross_attention(layer, y, tokens, tokens_pos, pointers, mask)
            y = y + layer.linear2(layer.activation(layer.linear1(layer.norm3(y))))
        out[rows] = attention.norm(y)
    return out.permute(0, 2, 1).reshape(len(memories), -1, *hw)


def cross_attention(layer, x, memory, memory_pos, pointers: int, mask) -> torch.Tensor:
    """`MemoryAttentionLayer._forward_ca` + `RoPEAttention.forward` (eval) with a key mask: x float[B, HW, C] attends
    to memory float[B, S, D] whose last `pointers` tokens get no rotary encoding -> float[B, HW, C]."""
    attn = layer.cross_attn_image
    q = attn._separate_heads(attn.q_proj(layer.norm2(x)), attn.num_heads)
    k = attn._separate_heads(attn.k_proj(memory + memory_pos), attn.num_heads)
    v = attn._separate_heads(attn.v_proj(memory), attn.num_heads)
    attn.freqs_cis = attn.freqs_cis.to(q.device)
    if attn.freqs_cis.shape[0] != q.shape[-2]:  # as RoPEAttention does for a feature size other than its config's
        side = math.sqrt(q.shape[-2])
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(q.device)
    rope = k.shape[-2] - pointers
    q, k_rope = apply_rotary_enc(q, k[:, :, :rope], freqs_cis=attn.freqs_cis, repeat_freqs_k=attn.rope_k_repeat)
    k = torch.cat([k_rope, k[:, :, rope:]], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(attn._recombine_heads(out))
