"""XMem mask propagation at 480p: vrsjax's `XMem.propagate` vs the official hkchengrex/XMem inference, one run.

VideoSeg-R1's use: one object's keyframe mask in the middle of a clip, propagated both ways (a fresh forward run from
the keyframe and one over the reversed frames) with the official defaults. The official side is what its `eval.py`
does per direction: `InferenceCore.step` frame by frame on torchvision-normalised frames, the mask on the first
frame, `end=True` on the last. Both use the same random weights (vrsjax's `XMem.random(0)`, loaded into the
official network) and the same frames; the probabilities are compared. XMem is not on PyPI: pass a checkout of
https://github.com/hkchengrex/XMem with --official (its ImageNet-pretrained trunk download is switched off here);
without it only vrsjax is timed.

    python benchmarks/xmem.py [--official /path/to/XMem] [--frames 6] [--threads 1] [--no-write]

Writes the "XMem propagation (480p)" section of BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

import numpy as np
import torch
from report import fmt, machine, repeats, skipped, spread_note, write_section

from vrsjax.services.xmem import XMem

TITLE = "XMem propagation (480p)"


def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8[T, H, W, 3] (a textured background, a moving ellipse) and the ellipse's masks bool[T, H, W]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = np.stack([np.sin(xx / 40 + yy / 60), np.cos(yy / 30 - xx / 70), np.sin((xx + yy) / 50)], -1) * 50 + 110
    video, masks = [], []
    for t in range(frames):
        cx = width * (0.3 + 0.05 * t)
        inside = ((yy - height * 0.5) / (height * 0.2)) ** 2 + ((xx - cx) / (width * 0.1)) ** 2 <= 1
        frame = base + rng.normal(0, 8, base.shape)
        frame[inside] = (230, 60, 40)
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
        masks.append(inside)
    return np.stack(video), np.stack(masks)


def load_official(path: str, state: dict) -> tuple[type, torch.nn.Module]:
    """(InferenceCore, the official XMem network holding `state`) from a checkout, without the ImageNet download."""
    import torchvision.transforms  # noqa: F401 (imported here, before timing, not on the first official run)

    sys.path.insert(0, path)
    import model.resnet as resnet  # noqa: PLC0415 (the official code lives outside the package)

    r18, r50 = resnet.resnet18, resnet.resnet50
    resnet.resnet18 = lambda pretrained=True, extra_dim=0: r18(pretrained=False, extra_dim=extra_dim)
    resnet.resnet50 = lambda pretrained=True, extra_dim=0: r50(pretrained=False, extra_dim=extra_dim)
    from inference.inference_core import InferenceCore
    from model.network import XMem as OfficialXMem

    with contextlib.redirect_stdout(io.StringIO()):
        network = OfficialXMem({}).eval()
        network.load_weights(dict(state))
    return InferenceCore, network


def official_propagate(core, network, frames, mask, keyframe, config) -> np.ndarray:
    """eval.py's loop, once forward from the keyframe and once over the reversed frames."""
    from torchvision import transforms

    norm = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    config = dict(config, key_dim=network.key_dim, value_dim=network.value_dim, hidden_dim=network.hidden_dim)
    config["enable_long_term_count_usage"] = (
        len(frames) / (config["max_mid_term_frames"] - config["min_mid_term_frames"]) * config["num_prototypes"]
        >= config["max_long_term_elements"]
    )
    out = np.zeros((len(frames), 2, *frames.shape[1:3]), np.float32)
    for order in (range(keyframe, len(frames)), range(keyframe, -1, -1)):
        processor = core(network, config=config)
        processor.set_all_labels([1])
        for i, t in enumerate(order):
            rgb = norm(transforms.functional.to_tensor(frames[t]))
            msk = torch.from_numpy(mask[None].astype(np.float32)) if i == 0 else None
            prob = processor.step(rgb, msk, [1] if i == 0 else None, end=i == len(order) - 1)
            out[t] = prob.numpy()
    return out


def timed(fn, repeats: int) -> tuple[list[float], np.ndarray]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def measure(
    official: str | None, frames_n: int = 6, height: int = 480, width: int = 854, reps: int = 5, threads: int = 1
) -> str:
    """Both implementations alternating on the same video and weights; -> the section body."""
    torch.set_num_threads(threads)
    ours = XMem.random(0)
    frames, masks = synthetic_video(frames_n, height, width)
    keyframe = frames_n // 2
    config = dict(
        top_k=30, mem_every=5, deep_update_every=-1, enable_long_term=True, max_mid_term_frames=10,
        min_mid_term_frames=5, max_long_term_elements=10000, num_prototypes=128,
    )  # fmt: skip
    runs = {"vrsjax": lambda: ours.propagate(frames, masks[keyframe], keyframe)}
    if official:
        core, network = load_official(official, ours.state_dict())
        runs["official XMem"] = lambda: official_propagate(core, network, frames, masks[keyframe], keyframe, config)
    results = {}
    for _ in range(reps):  # alternate the implementations so that machine load hits both alike
        for name, fn in runs.items():
            times, probs = timed(fn, 1)
            results.setdefault(name, ([], probs))[0].extend(times)
    rows, fps = [], {}
    for name, (times, _) in results.items():
        fps[name] = frames_n / min(times)
        rows.append(f"| {name} | {min(times):.2f} | {fmt(times, 2)} | {fps[name]:.3f} |")
    plural = f"{threads} thread" + "s" * (threads > 1)
    body = [
        f"`python benchmarks/xmem.py --official <XMem checkout>` — {machine()}, torch {torch.__version__} "
        f"({plural}), float32 on CPU. {frames_n} frames of {height}x{width} "
        f"(padded to multiples of 16), one object, keyframe {keyframe}, propagated both ways with the official "
        f"defaults; random weights (`XMem.random(0)`) in both; {reps} repeats, alternating.",
        "",
        f"| implementation | best (s) | {spread_note(reps)} (s) | frames/s (best) |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    if "official XMem" in results:
        diff = float(np.abs(results["vrsjax"][1] - results["official XMem"][1]).max())
        medians = {name: statistics.median(times) for name, (times, _) in results.items()}
        body += [
            "",
            f"Speed-up: **{fps['vrsjax'] / fps['official XMem']:.2f}x** (frames/s, best over best; "
            f"{medians['official XMem'] / medians['vrsjax']:.2f}x median over median). "
            f"Max |probability difference|: {diff:.1e}. vrsjax runs the keyframe step once for both directions "
            f"({frames_n} steps instead of {frames_n + 1}: expected gain {(frames_n + 1) / frames_n:.2f}x); "
            f"each step is the official computation. Load average at the end: {os.getloadavg()[0]:.1f} "
            "(the machine is shared: ratios away from the expected gain are load noise).",
        ]
    else:
        body += [
            "",
            skipped(
                "official XMem not timed: no checkout given (XMem is not on PyPI; pass `--official PATH` to the "
                "script or `vrsjax bench --xmem-official PATH`, a checkout of https://github.com/hkchengrex/XMem)"
            ),
        ]
    return "\n".join(body)


def run(quick: bool = False) -> str:
    """The suite's entry point; the official side from $VRSJAX_XMEM_OFFICIAL (quick: 3 frames at 240x432)."""
    official = os.environ.get("VRSJAX_XMEM_OFFICIAL") or None
    body = measure(official, 3, 240, 432, repeats(2)) if quick else measure(official, reps=repeats(5))
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="a checkout of hkchengrex/XMem")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = measure(args.official, args.frames, args.height, args.width, args.repeats, args.threads)
    print(text)
    if not args.no_write:
        write_section(TITLE, text)


if __name__ == "__main__":
    main()
