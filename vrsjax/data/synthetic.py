"""A synthetic video reasoning segmentation dataset in the exact ReVOS layout, deterministic by seed, for tests and
the demo: `write_dataset(out_dir, num_videos, seed)` (the `vrsjax data synth` command calls it).

Each video shows 2-4 shapes (squares, circles, triangles) of several colours and sizes crossing a textured
background left to right at different speeds; shapes drawn later occlude earlier ones, and shapes may leave the
frame (their RLE is null there, as in ReVOS). Expressions per video: referring ("the red square"), referring to
several objects ("the blue shapes"), reasoning ("the shape that overtakes the others", "the largest shape"),
reasoning about several objects ("the shapes that get hidden behind another shape"), and a no-target expression
(type_id 2, empty obj_id/anno_id). Written files: JPEGImages/SYN/all/<video>/<frame>.jpg, mask_dict.json (RLE via
pycocotools), mask_dict_foreground.json, meta_expressions_train_.json and meta_expressions_valid_.json (the
released ReVOS names), and sft/cot_sft.json + sft/dataset_info.json: chain-of-thought conversations in
LLaMA-Factory's ShareGPT format, built the way Veason-R1's `seed_cot_generation.py` builds its answers (stride
sampling through a top-5-area keyframe, the keyframe's per-object boxes in 560x560 rounded to 2 decimals).
JPEG is lossy, so frames round-trip approximately; masks are returned by `write_dataset` and round-trip exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vrsjax.data import transforms as T
from vrsjax.data.masks import encode_rle
from vrsjax.outdir import claim

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
}
SHAPES = ("square", "circle", "triangle")
SYSTEM_PROMPT = "You are a helpful assistant."
# Veason-R1's user prompt (REFERENCE.md section 1); the processing room renders the same text for RL prompts.
VEASON_USER_PROMPT = (
    "{video} \nYou are given {num} frames uniformly sampled from a 1 FPS video. Each image is preceded by its "
    "timestamp.\nGiven the following expression: '{question}', identify the timestamp where the target is best "
    "represented. Then, locate the target in that frame by predicting the bounding box(es).\nFirst, output the "
    "thinking process in <think> </think> tags, and then output the result in the following format within "
    "<answer> </answer> tags."
)


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    radius: float
    start: tuple[float, float]  # (x, y) centre at frame 0, pixels
    velocity: tuple[float, float]  # pixels per frame

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def center(self, t: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t

    def raster(self, t: int, height: int, width: int) -> np.ndarray:
        """bool[H, W]: the shape's pixels at frame t (before occlusion), computed in its bounding window only."""
        cx, cy = self.center(t)
        out = np.zeros((height, width), bool)
        y0, y1 = (int(np.clip(v, 0, height)) for v in (np.floor(cy - self.radius), np.ceil(cy + self.radius) + 1))
        x0, x1 = (int(np.clip(v, 0, width)) for v in (np.floor(cx - self.radius), np.ceil(cx + self.radius) + 1))
        if y0 >= y1 or x0 >= x1:
            return out
        y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        if self.shape == "square":
            inside = (np.abs(x - cx) <= self.radius) & (np.abs(y - cy) <= self.radius)
        elif self.shape == "circle":
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= self.radius**2
        else:  # isosceles triangle pointing up
            top = cy - self.radius
            inside = (y >= top) & (y <= cy + self.radius) & (np.abs(x - cx) <= (y - top) / 2)
        out[y0:y1, x0:x1] = inside
        return out


@dataclass
class SyntheticVideo:
    """What was drawn: frames uint8[T, H, W, 3] (before JPEG), visible object masks uint8[T, K, H, W] (z order);
    both None when write_dataset ran with keep_arrays=False."""

    name: str
    split: str
    shapes: list[Shape]
    num_frames: int
    anno_ids: list[int]
    expressions: dict[str, dict]
    frames: np.ndarray | None = field(default=None, repr=False)
    object_masks: np.ndarray | None = field(default=None, repr=False)


@dataclass
class SyntheticDataset:
    root: Path
    videos: dict[str, SyntheticVideo]

    def expression_masks(self, video: str, exp_id: str) -> np.ndarray:
        """uint8[T, K, H, W]: the generator's masks of the expression's objects (K may be 0; needs keep_arrays)."""
        vid = self.videos[video]
        obj_ids = vid.expressions[exp_id]["obj_id"]
        return vid.object_masks[:, obj_ids]


# What write_dataset writes at the top of its folder: all it may replace there.
DATASET_WRITES = ("JPEGImages", "mask_dict.json", "mask_dict_foreground.json", "meta_expressions_*_.json", "sft")


def write_dataset(
    out_dir: str | Path,
    num_videos: int = 8,
    seed: int = 0,
    *,
    num_frames: tuple[int, int] = (8, 12),
    size: tuple[int, int] = (160, 120),
    valid_every: int = 4,
    jpeg_quality: int = 90,
    sft: bool = True,
    keep_arrays: bool = True,
    scene=None,
    overwrite: bool = False,
) -> SyntheticDataset:
    """Write the dataset under out_dir (claimed with vrsjax.outdir.claim: a non-empty folder that vrsjax did not
    write is refused unless overwrite, and only DATASET_WRITES are replaced). Every valid_every-th video goes to the
    valid split.

    num_frames: inclusive range of frames per video; size: (width, height) of every frame; keep_arrays: keep each
    video's drawn frames and masks in the returned SyntheticDataset (turn off for large sets: memory); scene:
    `(rng, width, height, length) -> list[Shape]` that places the shapes (default: 2-4 shapes crossing the frame).
    """
    out = claim(out_dir, DATASET_WRITES, overwrite=overwrite, tool="vrsjax data synth")
    rng, sft_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    width, height = size
    videos: dict[str, SyntheticVideo] = {}
    mask_dict: dict[str, list] = {}
    foreground: dict[str, dict] = {}
    conversations: list[dict] = []
    for i in range(num_videos):
        split = "valid" if valid_every and i % valid_every == valid_every - 1 else "train"
        name = f"SYN/all/v{i:04d}"
        length = int(rng.integers(num_frames[0], num_frames[1] + 1))
        shapes = (scene or _scene)(rng, width, height, length)
        frames, masks = _render(rng, shapes, length, height, width)
        anno_ids = list(range(len(mask_dict), len(mask_dict) + len(shapes)))
        for k, anno in enumerate(anno_ids):
            mask_dict[str(anno)] = [encode_rle(masks[t, k]) if masks[t, k].any() else None for t in range(length)]
        video = SyntheticVideo(
            name, split, shapes, length, anno_ids, _expressions(rng, shapes, masks, anno_ids), frames, masks
        )
        _write_frames(out / "JPEGImages" / name, frames, jpeg_quality)
        foreground[name] = _foreground(video)
        if sft and split == "train":
            conversations += [
                _conversation(video, e, x, sft_rng) for e, x in video.expressions.items() if x["type_id"] != 2
            ]
        if not keep_arrays:
            video.frames = video.object_masks = None
        videos[name] = video
    _write_json(out / "mask_dict.json", mask_dict)
    _write_json(out / "mask_dict_foreground.json", foreground)
    for split in ("train", "valid"):
        _write_json(out / f"meta_expressions_{split}_.json", _meta(videos, split, height, width))
    if sft:
        _write_sft(out, conversations)
    return SyntheticDataset(out, videos)


def _scene(rng: np.random.Generator, width: int, height: int, length: int) -> list[Shape]:
    count = int(rng.integers(2, 5))
    names = [(c, s) for c in COLORS for s in SHAPES]
    picks = rng.choice(len(names), size=count, replace=False)
    shapes = []
    for k, pick in enumerate(picks):
        color, shape = names[int(pick)]
        radius = float(rng.choice([0.09, 0.15, 0.2])) * height
        lane = (k + 0.5) / count * height  # lanes keep shapes apart vertically, mostly
        start = (float(rng.uniform(0.05, 0.45)) * width, lane + float(rng.uniform(-0.08, 0.08)) * height)
        speed = float(rng.uniform(0.2, 1.1)) * width / length
        shapes.append(Shape(color, shape, radius, start, (speed, float(rng.uniform(-0.04, 0.04)) * height)))
    return shapes


def _render(rng: np.random.Generator, shapes: list[Shape], length: int, height: int, width: int):
    y, x = np.mgrid[:height, :width]
    background = np.stack([90 + 60 * x / width, 100 + 40 * y / height, 110 + 0 * x], axis=-1)
    texture = rng.integers(-12, 13, size=(height, width, 3))
    base = np.clip(background + texture, 0, 255).astype(np.uint8)
    frames = np.empty((length, height, width, 3), np.uint8)
    masks = np.zeros((length, len(shapes), height, width), np.uint8)
    for t in range(length):
        frames[t] = base
        covered = np.zeros((height, width), bool)
        for k in reversed(range(len(shapes))):  # the last shape is on top
            pixels = shapes[k].raster(t, height, width)
            masks[t, k] = pixels & ~covered
            covered |= pixels
            frames[t][masks[t, k] > 0] = COLORS[shapes[k].color]
    return frames, masks


def _expressions(rng: np.random.Generator, shapes: list[Shape], masks: np.ndarray, anno_ids: list[int]) -> dict:
    exps: list[tuple[str, list[int], int]] = [(f"the {s.name}", [k], 0) for k, s in enumerate(shapes)]
    for attr in ("color", "shape"):
        groups: dict[str, list[int]] = {}
        for k, s in enumerate(shapes):
            groups.setdefault(getattr(s, attr), []).append(k)
        for value, members in groups.items():
            if len(members) > 1:
                exps.append((f"the {value} shapes" if attr == "color" else f"all the {value}s", members, 0))
    final_x = [s.center(masks.shape[0] - 1)[0] for s in shapes]
    leader = int(np.argmax(final_x))
    if np.argmax([s.start[0] for s in shapes]) != leader:
        exps.append(("the shape that overtakes the others", [leader], 1))
    else:
        exps.append(("the shape that ends up furthest to the right", [leader], 1))
    areas = masks.sum(axis=(0, 2, 3))
    exps.append(("the largest shape in the video", [int(np.argmax(areas))], 1))
    hidden = [k for k, s in enumerate(shapes) if _hidden_fraction(s, masks, k) >= 0.15]
    if len(hidden) > 1:
        exps.append(("the shapes that get hidden behind another shape", hidden, 1))
    absent = [(c, s) for c in COLORS for s in SHAPES if f"{c} {s}" not in {sh.name for sh in shapes}]
    color, shape = absent[int(rng.integers(len(absent)))]
    exps.append((f"the {color} {shape}", [], 2))
    return {
        str(i): {"exp": text, "obj_id": objs, "anno_id": [anno_ids[k] for k in objs], "type_id": type_id}
        for i, (text, objs, type_id) in enumerate(exps)
    }


def _hidden_fraction(shape: Shape, masks: np.ndarray, k: int) -> float:
    """The largest fraction of the shape's in-frame pixels that another shape covers, over the frames."""
    full = np.array([shape.raster(t, *masks.shape[2:]).sum() for t in range(masks.shape[0])])
    visible = masks[:, k].sum(axis=(1, 2))
    return float(np.max((full - visible) / np.maximum(full, 1)))


def _write_frames(folder: Path, frames: np.ndarray, quality: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=quality)


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _foreground(video: SyntheticVideo) -> dict:
    """VISA's generate_foreground_mask.py: per frame the union of the objects any expression refers to."""
    referred = sorted({k for e in video.expressions.values() for k in e["obj_id"]})
    union = video.object_masks[:, referred].any(axis=1).astype(np.uint8)
    return {
        "masks_rle": [encode_rle(m) for m in union],
        "foreground_ratio": [float(m.sum() / m.size) for m in union],
    }


def _meta(videos: dict[str, SyntheticVideo], split: str, height: int, width: int) -> dict:
    chosen = [v for v in videos.values() if v.split == split]
    return {
        "videos": {
            v.name: {
                "vid_id": int(v.name.rsplit("v", 1)[1]),
                "frames": [f"{t:05d}" for t in range(v.num_frames)],
                "height": height,
                "width": width,
                "expressions": v.expressions,
            }
            for v in chosen
        }
    }


def _write_sft(root: Path, conversations: list[dict]) -> None:
    """sft/cot_sft.json (ShareGPT, image paths relative to the dataset root: LLaMA-Factory's dataset_dir is
    <root>/sft and media_dir <root>; the frames are meant at 560x560) and its sft/dataset_info.json entry."""
    _write_json(root / "sft" / "cot_sft.json", conversations)
    info = {
        "vrsjax_synthetic_cot": {
            "file_name": "cot_sft.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images", "system": "system"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
    }
    _write_json(root / "sft" / "dataset_info.json", info)


def _conversation(vid: SyntheticVideo, exp_id: str, exp: dict, rng: np.random.Generator, num_samples: int = 6) -> dict:
    """One CoT conversation: Veason-R1 training sampling, the keyframe's boxes (2 decimals), a templated thought."""
    masks = vid.object_masks[:, exp["obj_id"]]
    height, width = masks.shape[2:]
    union = masks.any(axis=1)
    frame_ids, keyframe = T.veason_train_frame_ids(T.union_areas(union), num_samples, rng)
    boxes = T.veason_gt_boxes(T.object_extents(masks[[keyframe]]), width, height)[0]
    boxes = [[round(v, 2) for v in box] for box in boxes]
    answer = json.dumps({"keyframe_timestamp": keyframe, "bbox_2d_list": boxes})
    video = ", ".join(f"({t}s)<image>" for t in frame_ids)
    question = exp["exp"].lower().strip(".")
    prompt = VEASON_USER_PROMPT.format(video=video, num=len(frame_ids), question=question)
    return {
        "id": f"{vid.name}/{exp_id}",
        "system": SYSTEM_PROMPT,
        "conversations": [
            {"from": "human", "value": prompt},
            {
                "from": "gpt",
                "value": f"<think>{_thinking(vid, exp, frame_ids, keyframe, boxes)}</think>\n<answer>{answer}</answer>",
            },
        ],
        "images": [f"JPEGImages/{vid.name}/{t:05d}.jpg" for t in frame_ids],
    }


def _thinking(vid: SyntheticVideo, exp: dict, frame_ids: list[int], keyframe: int, boxes: list) -> str:
    names = ", ".join(s.name for s in vid.shapes)
    targets = " and ".join(vid.shapes[k].name for k in exp["obj_id"])
    where = []
    for box in boxes:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        where.append(f"{_third(cy, ('top', 'middle', 'bottom'))} {_third(cx, ('left', 'centre', 'right'))}")
    return (
        f"Step 1: The {len(frame_ids)} frames show {len(vid.shapes)} shapes ({names}) moving from left to right. "
        f"Step 2: The expression '{exp['exp']}' refers to the {targets}; the frame at timestamp {keyframe} shows "
        f"it clearly, as one of the frames where it is most visible. "
        f"Step 3: In frame {keyframe}, the target is in the {' and the '.join(where)} of the image."
    )


def _third(value: float, words: tuple[str, str, str]) -> str:
    return words[min(2, int(value / T.VEASON_SIZE * 3))]
