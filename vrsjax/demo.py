"""`vrsjax demo`: the main job on an embedded default, small enough for a laptop CPU.

Until the end-to-end training demo lands, it builds a tiny random Qwen2.5-VL checkpoint in the HF format,
converts it to a vrsjax (orbax) checkpoint, loads it, runs the policy on a synthetic 4-frame video shown
Veason-style as timestamped images, and exports it back to HF safetensors — printing each step.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np


def synthetic_frames(num_frames: int = 4, size: int = 112, seed: int = 0) -> np.ndarray:
    """uint8[T, size, size, 3]: a red square crossing a grey background, a blue disc standing still."""
    rng = np.random.default_rng(seed)
    frames = np.full((num_frames, size, size, 3), 120, np.uint8) + rng.integers(0, 8, (1, size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size * 0.7) ** 2 + (xx - size * 0.3) ** 2 < (size * 0.12) ** 2
    for t in range(num_frames):
        x0 = int(t * (size - 24) / max(num_frames - 1, 1))
        frames[t, 20:44, x0 : x0 + 24] = (220, 30, 30)
        frames[t][disc] = (30, 60, 220)
    return frames


def run(out_dir: str | Path = "demo_out") -> dict:
    from vrsjax.models import qwen2_5_vl
    from vrsjax.models.qwen2_5_vl.params import convert_hf_to_vrsjax, convert_vrsjax_to_hf
    from vrsjax.processing.patchify import patchify
    from vrsjax.testing import TINY_IDS, write_tiny_checkpoint

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    hf_dir = write_tiny_checkpoint(out / "tiny_hf")
    print(f"[1/5] wrote a tiny random Qwen2.5-VL checkpoint (HF format) to {hf_dir}")
    converted = convert_hf_to_vrsjax(hf_dir, out / "tiny_vrsjax")
    print(f"[2/5] converted it to a vrsjax checkpoint (config.json + orbax params/) at {converted}")
    model = qwen2_5_vl.from_pretrained(converted)
    frames = synthetic_frames()
    pixels, grids, ids = [], [], [7, 8, 9]  # stand-in ids for the system/user prompt text
    for t, frame in enumerate(frames):
        p, g = patchify(frame)
        pixels.append(p)
        grids.append(g)
        ids += [10 + t, TINY_IDS["vision_start_token_id"]] + [TINY_IDS["image_token_id"]] * (int(np.prod(g)) // 4)
        ids += [TINY_IDS["vision_end_token_id"]]
    ids += [11, 12, 13]
    print(
        f"[3/5] synthetic video: {frames.shape[0]} frames {frames.shape[1]}x{frames.shape[2]} -> "
        f"{len(grids)} images of grid {grids[0].tolist()}, {len(ids)} prompt tokens"
    )
    t1 = time.perf_counter()
    logits = np.asarray(
        model(input_ids=np.array([ids]), pixel_values=np.concatenate(pixels), image_grid_thw=np.stack(grids))
    )
    print(
        f"[4/5] policy forward: logits {logits.shape}, next token {int(logits[0, -1].argmax())}, "
        f"{time.perf_counter() - t1:.2f}s (includes compilation)"
    )
    exported = convert_vrsjax_to_hf(converted, out / "exported_hf")
    print(
        f"[5/5] exported back to HF safetensors at {exported} ({', '.join(sorted(p.name for p in exported.iterdir()))})"
    )
    print(f"demo done in {time.perf_counter() - t0:.1f}s")
    return {"logits_shape": logits.shape, "next_token": int(logits[0, -1].argmax()), "out": out}
