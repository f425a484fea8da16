"""The demo's measurements: held-out J&F of a policy, the GRPO learning statistics, plots and overlay GIFs.

SAM2 runs with random weights in the demo (no download), so its masks carry no signal and cannot show what the
policy learned. The held-out evaluation therefore segments with two transparent, ground-truth-free stand-ins that
only see the frames and the policy's answer (greedy, Veason-R1 inference sampling and parsing):
- `static_box` (the J&F the demo's learning check uses): the predicted boxes rasterized on every frame, no
  tracking: the policy's localization and nothing else.
- `colour_track` (reported too): the predicted keyframe boxes pick the object the way a box prompt does in SAM2
  -- the dominant saturated colour inside the boxes (the synthetic shapes are flat-coloured on a grey, unsaturated
  background) -- and every frame's mask is the pixels of that colour (appearance tracking). Sharper when the box
  is on the object; when the box does not depend on the query it only measures which colour the box happens to
  cover, so it is not the checked number.
J and F are DAVIS's (`vrsjax.eval.metrics`) per frame over the whole video, x100 per expression, averaged per
type and overall as ReVOS does ((referring + reasoning) / 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vrsjax.eval import metrics
from vrsjax.processing.prompts import parse_veason_answer, veason_prompt

SEGMENTERS = ("static_box", "colour_track")
SATURATION = 80  # max - min channel value: shapes are >= 130, the demo background <= 60


def box_masks(boxes, height: int, width: int) -> np.ndarray:
    """bool[H, W]: the union of [x1, y1, x2, y2] pixel boxes (inclusive, clipped)."""
    mask = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in boxes:
        x1, x2 = sorted((int(np.clip(x1, 0, width - 1)), int(np.clip(x2, 0, width - 1))))
        y1, y2 = sorted((int(np.clip(y1, 0, height - 1)), int(np.clip(y2, 0, height - 1))))
        if (x1, y1, x2, y2) != (0, 0, 0, 0):
            mask[y1 : y2 + 1, x1 : x2 + 1] = True
    return mask


def colour_track(frames: np.ndarray, keyframe: int, boxes) -> np.ndarray:
    """bool[T, H, W]: pixels of the dominant saturated colour inside the keyframe boxes, in every frame."""
    frames = np.asarray(frames, np.int16)
    inside = box_masks(boxes, *frames.shape[1:3])
    pixels = frames[keyframe][inside]
    saturated = pixels[pixels.max(-1) - pixels.min(-1) >= SATURATION]
    if len(saturated) == 0:
        return np.zeros(frames.shape[:3], bool)
    keys, counts = np.unique(saturated // 16, axis=0, return_counts=True)
    colour = keys[np.argmax(counts)] * 16 + 8
    return (np.abs(frames - colour).max(-1) <= 24) & (frames.max(-1) - frames.min(-1) >= SATURATION)


def keyframe_box_iou(boxes, gt_boxes: np.ndarray) -> float:
    """0..1: the mean, over the target objects present on the keyframe, of the best IoU of a predicted box with
    the object's box (+1-pixel convention, as the spatial reward); 0 when no target is present there.

    boxes: [x1, y1, x2, y2] predicted, video pixels; gt_boxes: int[K, 4], -1 rows for absent objects."""
    from vrsjax.rewards.boxes import iou_matrix

    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt = gt[gt[:, 0] >= 0]
    pred = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(gt) == 0 or len(pred) == 0:
        return 0.0
    pred = np.concatenate([np.minimum(pred[:, :2], pred[:, 2:]), np.maximum(pred[:, :2], pred[:, 2:])], axis=1)
    return float(np.nan_to_num(iou_matrix(pred, gt)).max(axis=0).mean())


def segment(name: str, frames: np.ndarray, keyframe: int, boxes) -> np.ndarray:
    if name == "colour_track":
        return colour_track(frames, keyframe, boxes)
    mask = box_masks(boxes, *frames.shape[1:3])
    return np.repeat(mask[None], len(frames), axis=0)


def j_and_f(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Mean J and F over the frames of one expression, x100."""
    j = np.mean([metrics.jaccard(g, p) for g, p in zip(gt, pred, strict=True)])
    f = np.mean([metrics.boundary_f(g, p) for g, p in zip(gt, pred, strict=True)])
    return 100 * float(j), 100 * float(f)


def greedy_answers(model, processor, samples, max_new_tokens: int, stop: tuple[int, ...], batch: int = 8) -> list:
    """The policy's greedy response to each held-out sample's Veason-R1 prompt."""
    from vrsjax import rollout

    texts = []
    for s0 in range(0, len(samples), batch):
        chunk = [d.sample for d in samples[s0 : s0 + batch]]
        prompts = [veason_prompt(s.expression, s.frame_ids, template=processor.chat_template) for s in chunk]
        inputs = processor(text=prompts, images=[f for s in chunk for f in s.frames], padding="bucket")
        out = rollout.generate(model, inputs, n=1, max_new_tokens=max_new_tokens, temperature=0.0,
                               stop_token_ids=stop, processor=processor)  # fmt: skip
        texts += list(out.texts)
    return texts


def evaluate(model, processor, samples, size: int, max_new_tokens: int, stop: tuple[int, ...]) -> dict:
    """J&F (both segmenters), format rate and per-expression records of the policy on held-out samples."""
    from vrsjax.rewards import veason

    texts = greedy_answers(model, processor, samples, max_new_tokens, stop)
    records, scores = [], {name: {0: [], 1: []} for name in SEGMENTERS}
    for demo, text in zip(samples, texts, strict=True):
        frames, gt = demo.video_frames, demo.video_masks
        height, width = frames.shape[1:3]
        keyframe, boxes = parse_veason_answer(text, width, height, size)
        keyframe = int(np.clip(keyframe, 0, len(frames) - 1))
        record = {"id": demo.sample.sample_id, "type_id": demo.type_id, "response": text, "keyframe": keyframe}
        record["boxes"] = boxes
        record["format"] = veason.format_reward(text)
        record["box_iou"] = keyframe_box_iou(boxes, demo.video_boxes[keyframe])
        for name in SEGMENTERS:
            j, f = j_and_f(gt, segment(name, frames, keyframe, boxes))
            record[name] = {"J": j, "F": f, "J&F": (j + f) / 2}
            scores[name][demo.type_id].append(record[name])
        records.append(record)
    summary = {"format": float(np.mean([r["format"] for r in records])), "records": records}
    summary["box_iou"] = float(np.mean([r["box_iou"] for r in records]))
    for name in SEGMENTERS:
        per_type = {
            t: {k: float(np.mean([r[k] for r in v])) for k in ("J", "F", "J&F")} for t, v in scores[name].items() if v
        }
        overall = {k: float(np.mean([per_type[t][k] for t in per_type])) for k in ("J", "F", "J&F")}
        summary[name] = {"referring": per_type.get(0), "reasoning": per_type.get(1), "overall": overall}
    return summary


def _means(records: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in records])) for k in ("J", "F", "J&F")}


def paired_gain(before, after) -> dict:
    """Mean of after - before over the same held-out expressions, its standard error, and `ok`: the gain is
    above two standard errors (a paired test at about 97.7% one-sided)."""
    d = np.asarray(after, float) - np.asarray(before, float)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    diff = float(d.mean())
    return {"diff": diff, "se": se, "ok": bool(np.isfinite(se) and diff > 2 * se)}


def learning_checks(evals: dict, history: list[dict], headline: str, jf_goal: float, seed: int) -> dict:
    """The demo's pass/fail rule, each part a margin of two standard errors (or an absolute goal):
    J&F after GRPO >= jf_goal and above J&F after SFT (paired over held-out expressions); keyframe box IoU
    before SFT < after SFT < after GRPO (paired); GRPO's spatial reward, last quarter of steps above the first."""
    phases = ("before SFT", "after SFT", "after GRPO")
    jf = {p: [r[headline]["J&F"] for r in evals[p]["records"]] for p in phases}
    iou = {p: [r["box_iou"] for r in evals[p]["records"]] for p in phases}
    reward = quarter_gain([m["reward/score_mean"] for m in history], seed=seed)
    spatial = quarter_gain([m["reward/spatial_mean"] for m in history], seed=seed)
    jf_grpo = evals["after GRPO"][headline]["overall"]["J&F"]
    gains = {
        "J&F after GRPO > after SFT": paired_gain(jf["after SFT"], jf["after GRPO"]),
        "box IoU after SFT > before SFT": paired_gain(iou["before SFT"], iou["after SFT"]),
        "box IoU after GRPO > after SFT": paired_gain(iou["after SFT"], iou["after GRPO"]),
    }
    checks = [{"name": f"J&F after GRPO >= {jf_goal:g}", "value": f"{jf_grpo:.1f}", "ok": jf_grpo >= jf_goal}]
    for name, g in gains.items():
        checks.append({"name": name, "value": f"{g['diff']:+.3f} vs 2 x {g['se']:.3f}", "ok": g["ok"]})
    spatial_ok = bool(np.isfinite(spatial["se"]) and spatial["diff"] > 2 * spatial["se"])
    checks.append({"name": "GRPO spatial reward: last quarter > first quarter",
                   "value": f"{spatial['diff']:+.3f} vs 2 x {spatial['se']:.3f}", "ok": spatial_ok})  # fmt: skip
    return {"checks": checks, "reward": reward, "spatial": spatial, "paired": gains}


def quarter_gain(values, seed: int = 0, resamples: int = 2000) -> dict:
    """Mean of the last quarter minus the first, its standard error and a bootstrap 95% interval (steps resampled
    within each quarter)."""
    values = np.asarray(values, float)
    q = max(len(values) // 4, 1)
    first, last = values[:q], values[-q:]
    diff = float(last.mean() - first.mean())
    se = float(np.sqrt(first.var(ddof=1) / q + last.var(ddof=1) / q)) if q > 1 else float("nan")
    rng = np.random.default_rng(seed)
    boot = rng.choice(last, (resamples, q)).mean(1) - rng.choice(first, (resamples, q)).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"first": float(first.mean()), "last": float(last.mean()), "diff": diff, "se": se, "ci95": [lo, hi], "q": q}


def plot_rewards(history: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per reward component (and the total) over GRPO steps: the mean with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([m["step"] for m in history])
    paths = []
    for key in sorted(k for k in history[0] if k.startswith("reward/") and k.endswith("_mean")):
        name = key[len("reward/") : -len("_mean")]
        mean = np.array([m[key] for m in history])
        std = np.array([m.get(f"reward/{name}_std", 0.0) for m in history])
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(steps, mean, marker="o", ms=3)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=f"GRPO reward: {name}", xlabel="step", ylabel="mean over the rollouts")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"reward_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def overlay_gif(path: Path, frames: np.ndarray, pred: np.ndarray, gt: np.ndarray, title: str = "") -> Path:
    """An animated GIF: the prediction in red over each frame, the GT outline in green, 3x upscaled."""
    images = _overlays(frames, pred, gt, title)
    images[0].save(path, save_all=True, append_images=images[1:], duration=400, loop=0)
    return path


def overlay_png(path: Path, frames: np.ndarray, pred: np.ndarray, gt: np.ndarray, title: str = "") -> Path:
    """The first frame of `overlay_gif` as a PNG."""
    _overlays(frames[:1], pred[:1], gt[:1], title)[0].save(path)
    return path


def _overlays(frames: np.ndarray, pred: np.ndarray, gt: np.ndarray, title: str) -> list:
    from PIL import Image, ImageDraw

    images = []
    for t, frame in enumerate(frames):
        img = frame.astype(np.float32)
        img[pred[t]] = 0.45 * img[pred[t]] + 0.55 * np.array([255, 0, 0])
        edge = gt[t] & ~(np.roll(gt[t], 1, 0) & np.roll(gt[t], -1, 0) & np.roll(gt[t], 1, 1) & np.roll(gt[t], -1, 1))
        img[edge] = (0, 255, 0)
        pil = Image.fromarray(img.astype(np.uint8)).resize((frame.shape[1] * 3, frame.shape[0] * 3), Image.NEAREST)
        ImageDraw.Draw(pil).text((4, 4), f"{title} t={t}", fill=(255, 255, 255))
        images.append(pil)
    return images


def write_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
