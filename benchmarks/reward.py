"""SAM2 consistency masks for GRPO groups: vrsjax's batched group path vs the official per-response path, one run.

Groups of 8 and 16 distinct Veason-R1 answers (keyframe + 1-2 boxes each) on 6 frames at 560x560, SAM2 hiera-t with
random weights (seed 0) at its own input size (1024, or --image-size). Three paths, same model object, same frames:
- official: what Veason-R1's `get_sam2_video_predict` does per response with the sam2 package: `init_state` on a JPEG
  folder of the frames, `reset_state`, `add_new_points_or_box` for each box on the keyframe, `propagate_in_video`
  forward then reverse, objects OR-ed;
- exact: vrsjax's bit-identical cached path, `prepare(frames)` once per group then `propagate(video, keyframe, boxes)`
  per response (each frame's features computed once; tracking per object as sam2 does it);
- group: `prepare(frames)` then one `propagate_group(video, requests)` for the whole group (every object tracked
  through a frame in one batch).
The answers of the group of 8 are the first 8 of the group of 16. The official and exact paths are per response (no
state shared between responses but the exact path's prepared frames), so each group's time is the sum over its
responses; they run interleaved response by response, and each group path call runs right after the responses of its
group, so that a change in machine load hits all paths alike. Masks: the exact path must equal the official masks bit
for bit; the group path's must equal them wherever the official logit's magnitude exceeds 1e-2 (float rounding).

    python benchmarks/reward.py [--config hiera_t] [--image-size N] [--frames 6] [--size 560] [--groups 8 16]
                                [--threads N] [--device auto] [--json FILE] [--no-write]
    python benchmarks/reward.py --from-json FILE

Writes the "Reward (SAM2 consistency, one GRPO group)" section of BENCHMARKS.md unless --no-write (another device,
model or input size, as in a quick run, gets its own section, see `title`); `--json FILE` keeps the summary,
`--from-json FILE` writes the section of a summary measured elsewhere. `run(quick)` is the `vrsjax bench` entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import fmt, machine, write_section
from tqdm import tqdm

from vrsjax.services.sam2 import SAM2Service

TITLE = "Reward (SAM2 consistency, one GRPO group)"
PATHS = ("official", "exact", "group")


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures (see main's flags)."""

    config: str = "hiera_t"
    image_size: int | None = None
    device: str = "auto"
    frames: int = 6
    size: int = 560
    groups: tuple[int, ...] = field(default=(8, 16))
    threads: int | None = None
    seed: int = 0


def synthetic_video(frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8[T, size, size, 3] (a textured background with two moving ellipses) and their boxes float[T, 2, 4]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([np.sin(9 * xx + 3 * yy), np.cos(7 * yy - 2 * xx), np.sin(5 * (xx + yy))], -1) * 60 + 100
    centers = rng.uniform(0.3, 0.7, (2, 2)) * size
    velocity = rng.normal(0, 0.02, (2, 2)) * size
    radii = np.array([[0.12, 0.08], [0.07, 0.1]]) * size
    video, boxes = [], []
    for t in range(frames):
        frame = base + rng.normal(0, 6, base.shape)
        frame_boxes = []
        for k, color in enumerate(([230, 60, 40], [40, 200, 240])):
            cy, cx = centers[k] + t * velocity[k]
            inside = ((yy * size - cy) / radii[k, 0]) ** 2 + ((xx * size - cx) / radii[k, 1]) ** 2 <= 1
            frame[inside] = color
            ys, xs = np.nonzero(inside)
            frame_boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
        boxes.append(frame_boxes)
    return np.stack(video), np.asarray(boxes, dtype=float)


def group_answers(boxes: np.ndarray, responses: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """(keyframe, boxes float[K, 4]) per response: GT boxes of 1 or 2 objects on a random keyframe, each corner
    jittered by a few pixels, so that no two answers are the same (nothing to reuse but the frames' features). The
    first n answers for `responses` = N > n are the answers for n."""
    rng = np.random.default_rng(seed)
    answers = []
    for _ in range(responses):
        keyframe = int(rng.integers(len(boxes)))
        count = 2 if rng.random() < 0.25 else 1
        jitter = rng.normal(0, 4, (count, 4)).round()
        answers.append((keyframe, boxes[keyframe, :count] + jitter))
    return answers


def official_logits(service: SAM2Service, jpeg_dir: str, keyframe: int, boxes: np.ndarray) -> np.ndarray:
    """Veason-R1's per-response SAM2 call on the sam2 package: float32[T, H, W], the maximum logit over the objects
    (its masks, the objects OR-ed, are where this is > 0)."""
    predictor = service.predictor
    # The predictor's methods run under torch.inference_mode themselves; autocast as the service uses it.
    with torch.autocast("cuda", dtype=torch.bfloat16) if service.autocast else contextlib.nullcontext():
        state = predictor.init_state(jpeg_dir)
        predictor.reset_state(state)
        for obj_id, box in enumerate(boxes):
            predictor.add_new_points_or_box(state, frame_idx=keyframe, obj_id=obj_id, box=box)
        segments = {}
        for reverse in (False, True):
            for t, _, logits in predictor.propagate_in_video(state, start_frame_idx=keyframe, reverse=reverse):
                segments[t] = logits.amax(dim=0)[0].float().cpu().numpy()
    return np.stack([segments[t] for t in sorted(segments)])


class PeakMemory:
    """The peak extra memory of a block: CUDA's allocator peak, or on the CPU the process's resident set sampled
    every 5 ms (MiB above the level at entry)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.mib = device, 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base, self._peak, self._stop = _rss(), _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.mib = (max(self._peak, _rss()) - self._base) / 2**20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(service: SAM2Service) -> None:
    if service.device.type == "cuda":
        torch.cuda.synchronize(service.device)


def timed(service: SAM2Service, fn, *args, **kwargs) -> tuple[object, float, float]:
    """(result, seconds, peak extra MiB) of one call."""
    with PeakMemory(service.device) as peak:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        _sync(service)
        seconds = time.perf_counter() - start
    return result, seconds, peak.mib


def group_path(service: SAM2Service, decoded: np.ndarray, answers: list) -> dict:
    """prepare + one propagate_group for the whole group: seconds, peak MiB, max-logit per response."""
    requests = [{"keyframe": k, "boxes": b} for k, b in answers]

    def call():
        video = service.prepare(decoded)
        return service.propagate_group(video, requests, logits=True)

    logits, seconds, mib = timed(service, call)
    return {"seconds": seconds, "peak_mib": mib, "logits": logits}


def measure(settings: Settings) -> dict:
    """All three paths on the groups, interleaved; -> a JSON-able summary."""
    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")  # sam2's optional hole-filling kernel
    warnings.filterwarnings("ignore", message=".*Skipping the post-processing step.*")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    s = settings
    service = SAM2Service(s.config, device=s.device, image_size=s.image_size, seed=s.seed)
    frames, boxes = synthetic_video(s.frames, s.size, s.seed)
    answers = group_answers(boxes, max(s.groups), s.seed + 1)
    per = {name: {"seconds": [], "peak_mib": []} for name in ("official", "exact")}
    groups, official, agree = {}, [], {"exact": True, "group": True}
    max_error = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(Path(tmp) / f"{t:05d}.jpg", quality=95)
        decoded = np.stack([np.array(Image.open(Path(tmp) / f"{t:05d}.jpg")) for t in range(s.frames)])
        # Warm-up, untimed: first-call allocations (and on CUDA kernel selection) go to no path.
        with torch.inference_mode():
            service.predictor.forward_image(service.preprocess(decoded[:1]))
        if service.device.type == "cuda":
            group_path(service, decoded, answers[:1])
        load_start = os.getloadavg()[0]
        video, prepare_s, prepare_mib = timed(service, service.prepare, decoded)
        for i, (keyframe, answer) in enumerate(tqdm(answers, desc="responses (official, exact)")):
            logits, seconds, mib = timed(service, official_logits, service, tmp, keyframe, answer)
            official.append(logits)
            per["official"]["seconds"].append(seconds)
            per["official"]["peak_mib"].append(mib)
            masks, seconds, mib = timed(service, service.propagate, video, keyframe, answer)
            per["exact"]["seconds"].append(seconds)
            per["exact"]["peak_mib"].append(mib)
            agree["exact"] &= bool(np.array_equal(masks, logits > 0))
            if i + 1 in s.groups:
                result = group_path(service, decoded, answers[: i + 1])
                for got, expected in zip(result.pop("logits"), official, strict=True):
                    sure = np.abs(expected) > 1e-2
                    agree["group"] &= bool(np.array_equal(got[sure] > 0, expected[sure] > 0))
                    max_error = max(max_error, float(np.abs(got - expected).max()))
                groups[i + 1] = result
        load_end = os.getloadavg()[0]
    summary = {
        "settings": s.__dict__ | {"groups": list(s.groups)},
        "machine": machine(),
        "device": str(service.device),
        "autocast": service.autocast,
        "config": service.config,
        "image_size": service.image_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load": [round(load_start, 1), round(load_end, 1)],
        "keyframes": [k for k, _ in answers],
        "objects": [len(a) for _, a in answers],
        "prepare_s": prepare_s,
        "prepare_peak_mib": prepare_mib,
        "per_response": per,
        "exact_identical": agree["exact"],
        "group_agrees": agree["group"],
        "group_max_logit_error": max_error,
        "identical": agree["exact"] and agree["group"],
    }
    for size, result in groups.items():
        official_s = sum(per["official"]["seconds"][:size])
        exact_s = prepare_s + sum(per["exact"]["seconds"][:size])
        object_frames = sum(len(a) for _, a in answers[:size]) * s.frames
        summary[f"group_{size}"] = {
            "seconds": {"official": official_s, "exact": exact_s, "group": result["seconds"]},
            "peak_mib": {
                "official": max(per["official"]["peak_mib"][:size]),
                "exact": max(prepare_mib, *per["exact"]["peak_mib"][:size]),
                "group": result["peak_mib"],
            },
            "speedup": official_s / result["seconds"],
            "speedup_vs_exact": exact_s / result["seconds"],
            "object_frames_per_s": object_frames / result["seconds"],
        }
    biggest = summary[f"group_{max(groups)}"] if groups else {}
    summary["speedup"] = biggest.get("speedup")
    return summary


def command(settings: Settings) -> str:
    """The command line that measures `settings` (the flags that differ from the defaults)."""
    defaults = Settings()
    flags = []
    for name, value in settings.__dict__.items():
        if value != getattr(defaults, name) and value is not None:
            value = " ".join(map(str, value)) if isinstance(value, tuple | list) else value
            flags.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(["python benchmarks/reward.py", *flags])


def report(summary: dict) -> str:
    """The section body for one summary."""
    s = Settings(**(summary["settings"] | {"groups": tuple(summary["settings"]["groups"])}))
    precision = "float32 + bf16 autocast" if summary["autocast"] else "float32"
    per = summary["per_response"]
    rows = []
    for size in s.groups:
        g = summary[f"group_{size}"]
        sec, mib = g["seconds"], g["peak_mib"]
        latency = {
            "official": fmt(per["official"]["seconds"][:size], 2),
            "exact": fmt(per["exact"]["seconds"][:size], 2) + f" + prepare {summary['prepare_s']:.2f} once",
            "group": f"{sec['group'] / size:.2f} (the group call / {size})",
        }
        label = {"official": "official per response", "exact": "vrsjax exact (cached)", "group": "vrsjax group"}
        for path in PATHS:
            ratio = sec["official"] / sec[path]
            rows.append(
                f"| {size} distinct answers | {label[path]} | {sec[path]:.2f} | {latency[path]} | {mib[path]:.0f} | "
                f"x{ratio:.2f} |"
            )
    table = "\n".join(
        [
            "| group | path | group (s) | per response (s) | peak extra memory (MiB) | vs official |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    keyframes = ", ".join(map(str, summary["keyframes"]))
    objects = ", ".join(map(str, summary["objects"]))
    lines = [
        f"**{summary[f'group_{size}']['speedup']:.2f}x** the official per-response path for {size} distinct answers "
        f"(x{summary[f'group_{size}']['speedup_vs_exact']:.2f} the exact cached path; "
        f"{summary[f'group_{size}']['object_frames_per_s']:.2f} object-frames/s)"
        for size in s.groups
    ]
    load_start, load_end = summary["load"]
    return f"""
`{command(s)}` — {summary["machine"]}; torch {summary["torch"]} ({summary["threads"]} threads),
sam2 1.1.0, device {summary["device"]}, {precision}. Groups of {" and ".join(map(str, s.groups))} distinct Veason-R1
answers on {s.frames} frames at {s.size}x{s.size}, SAM2 {summary["config"]} with random weights (seed {s.seed}) at
input size {summary["image_size"]}; keyframes {keyframes}; objects per answer {objects} (a group of n takes the first
n). Official = per response, as Veason-R1's `get_sam2_video_predict`: `init_state` on a JPEG folder of the frames +
`add_new_points_or_box` per box + `propagate_in_video` forward then reverse. Exact = `SAM2Service.prepare(frames)`
once + `propagate` per response (bit-identical to official). Group = `prepare` + one `propagate_group` for the whole
group (objects batched through every frame). One process, one run: official and exact interleaved response by
response (a group's time is the sum over its responses), each group call right after its group's responses. **The
machine was shared with other jobs** (load average {load_start} at the start, {load_end} at the end, 2 cores), so
absolute times are slow and noisy; ratios come from the same minutes. Per-response times: median [interquartile
range]; a group call is one timing (no spread). Peak extra memory: the resident set above its level at the call's
start, sampled every 5 ms (CPU), or the CUDA allocator's peak. Exact masks identical to the official ones:
**{summary["exact_identical"]}**; group masks identical wherever |official logit| > 1e-2: **{summary["group_agrees"]}**
(max |logit difference| {summary["group_max_logit_error"]:.1e}).

{table}

{"; ".join(lines)}.
"""


def title(summary: dict) -> str:
    """TITLE for hiera-t at its own input size on a CPU, the headline setting; another device, model or input size
    (a quick run) gets a section of its own, e.g. "... group, cuda, hiera_l)", so it never replaces the headline."""
    device = summary["device"].split(":")[0]
    config, image_size = summary["settings"]["config"], summary["settings"]["image_size"]
    extra = [device] * (device != "cpu") + [config] * (config != "hiera_t") + [f"input {image_size}"] * bool(image_size)
    return f"{TITLE[:-1]}, {', '.join(extra)})" if extra else TITLE


def run(quick: bool = False) -> str:
    """The suite's entry point: measure (a 256-pixel model and groups of 2 and 4 when quick), write the section."""
    settings = Settings(image_size=256, size=256, groups=(2, 4)) if quick else Settings()
    summary = measure(settings)
    print(json.dumps(summary, indent=1))
    if not summary["identical"]:
        raise SystemExit("masks differ between a vrsjax path and the official path")
    body = report(summary)
    write_section(title(summary), body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="hiera_t")
    parser.add_argument("--image-size", type=int, default=None, help="override SAM2's input size (default: 1024)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=560)
    parser.add_argument("--groups", type=int, nargs="+", default=[8, 16], help="group sizes (distinct answers)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    parser.add_argument("--from-json", default=None, help="measure nothing: write the section of a saved summary")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.from_json:  # a summary measured on another machine (e.g. a GPU host) with --json
        summary = json.loads(Path(args.from_json).read_text())
        write_section(title(summary), report(summary))
        return
    groups = tuple(sorted(set(args.groups)))
    settings = Settings(
        args.config, args.image_size, args.device, args.frames, args.size, groups, args.threads, args.seed
    )
    summary = measure(settings)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if not summary["identical"]:
        raise SystemExit("masks differ between a vrsjax path and the official path")
    if not args.no_write:
        write_section(title(summary), report(summary))


if __name__ == "__main__":
    main()
