"""M-RoPE position ids (HF `Qwen2_5_VLModel.get_rope_index`, transformers 5.23.0 semantics), on the host.

Per row, only unmasked tokens get positions: text runs count up from the current position on all three rows;
a vision run (consecutive image or video pad tokens) takes the next grid and gets
`t = floor(i * tokens_per_second * second_per_grid_t)` (videos; 0 for images), h and w from the merged grid,
all offset by the current position, after which the current position advances by `max(h, w) / merge`.
Padding positions are 0 and `rope_delta = max position + 1 - number of real tokens`.

Note: transformers 5.23 advances by `max(h, w) / merge` after a vision block; transformers 4.x (and the
original Qwen code) continued from `max(position) + 1`, which differs only for videos whose scaled temporal
extent exceeds their merged height and width. We match the pinned reference.
"""

from __future__ import annotations

import numpy as np


def get_rope_index(
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    image_grid_thw: np.ndarray | None = None,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
    *,
    image_token_id: int = 151655,
    video_token_id: int = 151656,
    spatial_merge_size: int = 2,
    tokens_per_second: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """int[B, L] ids -> (int32[3, B, L] positions, int32[B] rope deltas)."""
    input_ids = np.asarray(input_ids)
    batch, length = input_ids.shape
    mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    grids = {1: _rows(image_grid_thw), 2: _rows(video_grid_thw)}
    seconds = iter(np.asarray(second_per_grid_ts, np.float32).reshape(-1)) if second_per_grid_ts is not None else None
    cursor = {1: 0, 2: 0}
    positions = np.zeros((3, batch, length), np.int64)
    deltas = np.zeros((batch,), np.int64)
    for b in range(batch):
        ids = input_ids[b][mask[b]]
        kinds = np.where(ids == image_token_id, 1, np.where(ids == video_token_id, 2, 0))
        pieces, current = [], 0
        for kind, start, end in _runs(kinds):
            if kind == 0:
                pieces.append(np.broadcast_to(np.arange(end - start) + current, (3, end - start)))
                current += end - start
                continue
            t, h, w = grids[kind][cursor[kind]]
            cursor[kind] += 1
            interval = _interval(kind, seconds, tokens_per_second)
            pieces.append(_vision_positions(current, t, h // spatial_merge_size, w // spatial_merge_size, interval))
            current += max(h, w) // spatial_merge_size
        llm = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        positions[:, b, mask[b]] = llm
        deltas[b] = (llm.max() + 1 if llm.size else 0) - len(ids)
    return positions.astype(np.int32), deltas.astype(np.int32)


def text_positions(attention_mask: np.ndarray) -> np.ndarray:
    """int[B, L] -> int32[3, B, L]: positions counting real tokens only (left padding gets 0)."""
    mask = np.asarray(attention_mask).astype(np.int64)
    pos = np.where(mask > 0, np.cumsum(mask, axis=1) - 1, 0)
    return np.broadcast_to(pos, (3, *pos.shape)).astype(np.int32)


def _rows(grid: np.ndarray | None) -> np.ndarray:
    return np.zeros((0, 3), np.int64) if grid is None else np.asarray(grid, np.int64).reshape(-1, 3)


def _runs(kinds: np.ndarray):
    """(kind, start, end) for each maximal run of equal token kinds."""
    if len(kinds) == 0:
        return []
    edges = np.flatnonzero(np.diff(kinds)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(kinds)]])
    return [(int(kinds[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _interval(kind: int, seconds, tokens_per_second: int):
    """Temporal step per grid: images 1; videos tokens_per_second * second_per_grid_t in float32 (as torch)."""
    if kind == 1:
        return 1
    if seconds is None:
        return tokens_per_second  # HF falls back to 1 second per grid, an integer product
    return np.float32(tokens_per_second) * next(seconds)


def _vision_positions(start: int, t: int, h: int, w: int, interval) -> np.ndarray:
    """int64[3, t*h*w] (t, h, w rows) for one image/video block starting at `start`."""
    if isinstance(interval, np.floating):  # float32 product, truncated, exactly as torch's `.long()`
        temporal = (np.arange(t).astype(np.float32) * interval).astype(np.int64)
    else:
        temporal = np.arange(t) * interval
    tt, hh, ww = np.meshgrid(temporal, np.arange(h) + start, np.arange(w) + start, indexing="ij")
    return np.stack([tt.reshape(-1) + start, hh.reshape(-1), ww.reshape(-1)])
