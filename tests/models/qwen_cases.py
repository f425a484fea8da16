"""Helpers shared by the Qwen2.5-VL tests: transformers reference logits and multimodal batches."""

import numpy as np
import torch

from vrsjax.testing import TINY_IDS

IMG, VID, VSTART, VEND = (
    TINY_IDS[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
)


def hf_model(path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()


def hf_logits(model, batch):
    """transformers forward in float32 on the same batch; mm_token_type_ids as the v5 processor returns them."""
    ids = batch["input_ids"]
    kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items() if v is not None}
    kwargs["mm_token_type_ids"] = torch.from_numpy(np.where(ids == IMG, 1, np.where(ids == VID, 2, 0)))
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


def vision_block(token, grid):
    t, h, w = grid
    return [VSTART] + [token] * (t * h * w // 4) + [VEND]


def make_batch(rows, images=(), videos=(), second_per_grid_ts=None, seed=0):
    """rows: lists of token ids (left-padded into a batch); images/videos: their (t, h, w) patch grids."""
    rng = np.random.default_rng(seed)
    length = max(len(r) for r in rows)
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = r
        mask[i, length - len(r) :] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key, grids in (("pixel_values", images), ("pixel_values_videos", videos)):
        if grids:
            n = sum(t * h * w for t, h, w in grids)
            batch[key] = rng.normal(size=(n, 3 * 2 * 14 * 14)).astype(np.float32)
            batch["image_grid_thw" if key == "pixel_values" else "video_grid_thw"] = np.array(grids, np.int64)
    if second_per_grid_ts is not None:
        batch["second_per_grid_ts"] = np.array(second_per_grid_ts, np.float32)
    return batch


def text(n, seed):
    return list(np.random.default_rng(seed).integers(0, 290, n))
