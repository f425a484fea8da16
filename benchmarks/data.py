"""Training-data throughput: the vrsjax grain pipeline over TFDS ArrayRecord files against reading JSON + JPEG + RLE
directly per sample, as Veason-R1's loader does, on a synthetic ReVOS-layout set.

The reference is Veason-R1's `ReVOS_KeyframeSFT_Base_Dataset_mod.__getitem__` restated here (mask_dict.json and
the metadata loaded once; per sample: decode every frame's RLE of every object with pycocotools, OR them, take the
union areas, draw the keyframe among the top 5, stride-sample, box every object with np.where, read and resize the
sampled JPEGs with PIL, resize the masks with torch `F.interpolate(mode="nearest")`), run in one process. vrsjax
runs its training pipeline (`vrsjax.data.pipeline.train_dataset`: precomputed areas, only the sampled frames and
masks decoded) with worker processes, and also without, to separate the algorithmic gain from the parallelism.
Both produce the same examples for the same keyframe (tests/data/test_data_transforms.py checks it).

    python benchmarks/data.py [--videos 300] [--samples 64] [--batches 12] [--workers 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import fmt, machine, spread_note, write_section  # noqa: E402

from vrsjax.data import synthetic  # noqa: E402
from vrsjax.data.pipeline import train_dataset  # noqa: E402
from vrsjax.data.records import build_records  # noqa: E402
from vrsjax.data.revos import read_revos  # noqa: E402

BATCH = 16  # Veason-R1's rollout batch: prompts per GRPO step
TITLE = "Data pipeline"


class ReferenceLoader:
    """Veason-R1's training loader, restated: JSON loaded once, everything else decoded per sample."""

    def __init__(self, root: Path, num_samples: int = 6, size: int = 560) -> None:
        self.root, self.num_samples, self.size = root, num_samples, size
        videos = json.loads((root / "meta_expressions_train_.json").read_text())["videos"]
        self.mask_dict = json.loads((root / "mask_dict.json").read_text())
        self.metas = []
        for video, vid in videos.items():
            frames = sorted(vid["frames"])
            for exp in vid["expressions"].values():
                if exp["type_id"] != 2:
                    paths = [root / "JPEGImages" / video / f"{f}.jpg" for f in frames]
                    self.metas.append((paths, [str(a) for a in exp["anno_id"]]))

    def __len__(self) -> int:
        return len(self.metas)

    def __getitem__(self, index: int) -> dict:
        paths, anno_ids = self.metas[index]
        with Image.open(paths[0]) as image:
            height, width = image.height, image.width
        union, per_object = [], []
        for t in range(len(paths)):
            frame_union, objects = np.zeros((height, width), np.uint8), []
            for anno in anno_ids:
                obj = np.zeros((height, width), np.uint8)
                if self.mask_dict[anno][t] is not None:
                    m = mask_utils.decode(self.mask_dict[anno][t]).astype(np.uint8)
                    frame_union, obj = frame_union | m, obj | m
                objects.append(obj)
            union.append(frame_union)
            per_object.append(np.stack(objects))
        union, per_object = np.stack(union), np.stack(per_object)
        top = ((union > 0).sum(axis=(1, 2))).argsort()[-5:][::-1]
        keyframe = int(random.choice(top))
        step = math.ceil(len(paths) / (self.num_samples - 1))
        ids = list(range(keyframe % step, len(paths), step))
        boxes = {}
        for i, frame in enumerate(per_object[ids]):
            boxes[i] = [[0, 0, 0, 0]]
            if np.any(frame == 1):
                boxes[i] = [
                    [0, 0, 0, 0]
                    if not obj.any()
                    else [
                        np.where(obj == 1)[1].min() * self.size / width + 0.5,
                        np.where(obj == 1)[0].min() * self.size / height + 0.5,
                        np.where(obj == 1)[1].max() * self.size / width + 0.5,
                        np.where(obj == 1)[0].max() * self.size / height + 0.5,
                    ]
                    for obj in frame
                ]
        frames = [
            np.asarray(Image.open(paths[t]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)) for t in ids
        ]
        masks = F.interpolate(torch.from_numpy(union[ids]).unsqueeze(1), size=(self.size, self.size), mode="nearest")
        return {"frames": np.stack(frames), "gt_masks": masks.squeeze(1).numpy(), "solution": json.dumps(boxes)}


def time_reference(root: Path, samples: int) -> list[float]:
    """Samples/s of each group of BATCH samples (the overall rate is their harmonic mean)."""
    loader = ReferenceLoader(root)
    order = np.random.default_rng(0).permutation(len(loader))[:samples]
    loader[int(order[0])]  # warm caches as the pipeline's first batch does
    rates = []
    for chunk in np.array_split(order, max(1, samples // BATCH)):
        start = time.perf_counter()
        for i in chunk:
            loader[int(i)]
        rates.append(len(chunk) / (time.perf_counter() - start))
    return rates


def time_pipeline(records: Path, batches: int, workers: int) -> list[float]:
    """Samples/s of each batch after the first."""
    iterator = iter(train_dataset(records, batch_size=BATCH, seed=0, shard=(0, 1), num_workers=workers))
    next(iterator)  # worker start-up and first fill of the buffers are not throughput
    rates = []
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        rates.append(BATCH / (time.perf_counter() - start))
    iterator.close()  # stops the workers (grain 0.2.18 may wait up to 25 s for one); killing them can hang close
    return rates


def overall(rates: list[float]) -> float:
    """Samples/s over the whole run from equal-sized chunks' rates (harmonic mean)."""
    return len(rates) / sum(1 / r for r in rates)


def measure(videos: int, samples: int, batches: int, workers: int) -> str:
    """Build the data, time the reference loader and the pipeline; -> the section body."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = synthetic.write_dataset(
            tmp / "revos", videos, seed=0, size=(640, 360), num_frames=(40, 80), sft=False, keep_arrays=False
        )
        train = read_revos(data.root, "train")
        t1 = time.perf_counter()
        build_records(train, tmp / "records")
        t2 = time.perf_counter()
        frames = sum(v.num_frames for v in data.videos.values())
        print(
            f"{videos} videos, {frames} frames, {len(train)} train expressions; "
            f"synth {t1 - t0:.1f}s, records {t2 - t1:.1f}s"
        )
        reference = time_reference(data.root, samples)
        print(f"reference (JSON + JPEG + RLE per sample): {fmt(reference, 2)} samples/s")
        serial = time_pipeline(tmp / "records", batches, 0)
        print(f"vrsjax pipeline, no workers: {fmt(serial, 2)} samples/s")
        parallel = time_pipeline(tmp / "records", batches, workers)
        print(f"vrsjax pipeline, {workers} workers: {fmt(parallel, 2)} samples/s")
    ref, ser, par = overall(reference), overall(serial), overall(parallel)
    return f"""
`python benchmarks/data.py --write` — {machine()}, shared with other jobs. Synthetic ReVOS-layout set:
{videos} videos of 40-80 frames at 640x360, 2-4 objects, {len(train)} train expressions ({frames} frames),
records built in {t2 - t1:.1f} s. Veason-R1 training sampling (6 frames, 560x560 frames and masks, GT boxes).
Reference: Veason-R1's loader restated, one process (every mask of the video decoded per sample);
vrsjax: `vrsjax.data.pipeline.train_dataset` (ArrayRecord via TFDS, grain), batches of {BATCH}, after the first batch.
Samples/s over the whole run, and per group of {BATCH} samples the {spread_note(len(reference))} for the reference
and the {spread_note(batches)} (batches) for the pipeline.

| loader | samples/s | per group of {BATCH}: median [spread] | vs reference |
| --- | --- | --- | --- |
| reference (JSON + JPEG + RLE per sample) | {ref:.1f} | {fmt(reference, 1)} | 1.0x |
| vrsjax pipeline, no worker processes | {ser:.1f} | {fmt(serial, 1)} | {ser / ref:.1f}x |
| vrsjax pipeline, {workers} worker processes | {par:.1f} | {fmt(parallel, 1)} | **{par / ref:.1f}x** |

One GRPO step consumes {BATCH} prompts: the pipeline prepares them in {BATCH / par:.2f} s, while workers
prefetch the next batches during the step; any step longer than that never waits (a Veason-R1 step — 128
rollouts of up to 1024 tokens, SAM2 rewards, the update — takes tens of seconds on accelerators: a margin of
{30 / (BATCH / par):.0f}x at 30 s). The gain without workers is algorithmic (areas precomputed at build time,
only the sampled frames' masks decoded) plus grain's decode threads; on a 2-core machine shared with other
jobs, those threads already use the cores, so worker processes add little there; they add throughput where
there are cores to spare.
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: 30 videos, 32 reference samples, 3 batches); writes the section."""
    body = measure(30, 32, 3, 2) if quick else measure(300, 64, 12, 2)
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--samples", type=int, default=64, help="reference samples timed")
    parser.add_argument("--batches", type=int, default=12, help="pipeline batches of 16 timed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = parser.parse_args()
    body = measure(args.videos, args.samples, args.batches, args.workers)
    print(body)
    if args.write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
