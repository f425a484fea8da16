"""Processor throughput: vrsjax `Processor` vs transformers 5.23 `Qwen2_5_VLProcessor`, same inputs, one run.

Two workloads, each asserted to give identical outputs (ids, grids, timing and pixel values bit for bit):
- Veason-R1 prompts: the keyframe prompt with 6 frames of 560x560 as images (no resize needed, 2400 vision tokens);
  against the PIL image processor (what `Processor` matches by default) and the torchvision one (AutoProcessor's
  default; `Processor(image_backend="torch")`).
- 8-frame 1280x720 videos: one video pad, the frames resized to 560x1008 by the video processor's antialiased
  bicubic (transformers: torchvision's uint8 kernel; vrsjax: the same arithmetic as banded float32 matmuls).
Calls alternate between the two sides; best and median of `--repeats` are reported as frames per second.

    python benchmarks/processor.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from report import fmt, machine, repeats, spread_note, write_section

from vrsjax.processing import Processor, veason_prompt
from vrsjax.testing import write_tiny_tokenizer


def natural_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8[n, H, W, 3]: smooth gradients, moving discs and mild noise (closer to video than white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        img = np.stack([120 + 80 * np.sin(6 * xx + t), 100 + 60 * yy, 90 + 70 * np.cos(4 * yy + 3 * xx)], -1)
        for k in range(4):
            cy, cx, r = (0.2 + 0.2 * k + 0.02 * t) * height / max(height, width), 0.15 + 0.2 * k, 0.05 + 0.02 * k
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (40 * k, 200 - 30 * k, 90 + 40 * k)
        frames[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255)
    return frames


def hf_processors(path: str):
    from transformers import AutoProcessor, AutoTokenizer, AutoVideoProcessor
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pil = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        video_processor=AutoVideoProcessor.from_pretrained(path),
    )
    return pil, AutoProcessor.from_pretrained(path)


def assert_identical(ours: dict, ref: dict) -> None:
    for key in ref:
        if key in ("mm_token_type_ids", "video_metadata"):
            continue
        a, b = np.asarray(ours[key]), np.asarray(ref[key])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise AssertionError(f"{key} differs between vrsjax and transformers")


def race(ours, ref, frames: int, repeats: int) -> dict:
    """Alternate the two calls; -> seconds per call of each side, after one warm-up each."""
    assert_identical(ours(), ref())
    times = {"vrsjax": [], "transformers": []}
    for _ in range(repeats):
        for name, fn in (("vrsjax", ours), ("transformers", ref)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def rate(times: list[float], frames: int) -> str:
    """'median [q1-q3]' frames/s (the spread in rate follows the spread in time, reversed)."""
    return fmt([frames / t for t in times], 1)


def measure(repeats: int) -> str:
    """Three workloads, both sides on the same inputs, outputs asserted identical; -> the section body."""
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        hf_pil, hf_tv = hf_processors(tmp)
        ours_pil, ours_tv = Processor.from_pretrained(tmp), Processor.from_pretrained(tmp, image_backend="torch")

    prompt = veason_prompt("The man in the red jacket who opens the door.", [0, 5, 10, 15, 20, 25])
    images = list(natural_frames(6, 560, 560))
    video = natural_frames(8, 720, 1280, seed=1)
    video_text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n"
    meta = [{"fps": 1.0, "total_num_frames": 8}]
    workloads = {
        "6x560x560 Veason prompt, PIL image processor": (
            lambda: ours_pil(text=prompt, images=images),
            lambda: hf_pil(text=[prompt], images=images, return_tensors="np"),
            6,
        ),
        "6x560x560 Veason prompt, torchvision image processor": (
            lambda: ours_tv(text=prompt, images=images),
            lambda: hf_tv(text=[prompt], images=images, return_tensors="np"),
            6,
        ),
        "8x1280x720 video -> 560x1008": (
            lambda: ours_pil(text=video_text, videos=[video], fps=1.0),
            lambda: hf_pil(text=[video_text], videos=[video], video_metadata=meta, return_tensors="np"),
            8,
        ),
    }
    lines = []
    for name, (ours, ref, frames) in workloads.items():
        times = race(ours, ref, frames, repeats)
        ours_t, ref_t = times["vrsjax"], times["transformers"]
        best, median = min(ref_t) / min(ours_t), statistics.median(ref_t) / statistics.median(ours_t)
        print(f"{name}: vrsjax {rate(ours_t, frames)} frames/s, transformers {rate(ref_t, frames)}, x{median:.2f}")
        lines.append(f"| {name} | {rate(ref_t, frames)} | {rate(ours_t, frames)} | x{best:.2f} / x{median:.2f} |")
    load = os.getloadavg()[0]
    return f"""
`python benchmarks/processor.py` — {machine()}, load average {load:.1f} at the end; numpy {np.__version__},
transformers {transformers.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads).
Same process, calls alternating, {repeats} runs each after a warm-up; outputs asserted identical (ids, grids,
`second_per_grid_ts`, pixel values bit for bit). Frames per second, {spread_note(repeats)}.

| workload | transformers (frames/s) | vrsjax (frames/s) | speed-up (best / median) |
| --- | --- | --- | --- |
{chr(10).join(lines)}
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: 2 repeats); writes the section and returns its body."""
    body = measure(repeats(2 if quick else 9))
    write_section("Processor", body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    write_section("Processor", measure(args.repeats))


if __name__ == "__main__":
    main()
