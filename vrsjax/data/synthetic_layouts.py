"""The synthetic dataset re-written in the other benchmark layouts, so every reader (and every evaluation protocol)
can be exercised on data whose masks are known exactly: `write_layout(dataset, layout, out_dir)` with layout one
of "mevis", "refytvos", "davis17", "reasonvos", "image_json".

Each follows the real release: MeViS split folders (train/ and valid_u/ with mask_dict.json, valid/ without);
Ref-YouTube-VOS and Ref-DAVIS17 in ReferFormer's layout with palette PNG annotations (object ids from 1; Ref-
YouTube-VOS valid has no annotations; DAVIS has four expressions per object, annotator 1/2 x first-frame/full);
ReasonVOS with 0/255 PNG folders named <source>_<video>_<obj_id>; image JSON records with RLE masks, boxes and
VisionReasoner solutions. Video names lose their slashes ("SYN/all/v0001" -> "SYN_all_v0001") outside ReVOS.
The returned mapping gives, for each (video, exp_id) written, the synthetic video and object indices it shows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from vrsjax.data import transforms as T
from vrsjax.data.masks import encode_rle
from vrsjax.data.synthetic import SyntheticDataset, SyntheticVideo
from vrsjax.outdir import claim

LAYOUTS = ("mevis", "refytvos", "davis17", "reasonvos", "image_json")
Mapping = dict[tuple[str, str], tuple[str, list[int]]]


# What each layout writes at the top of its folder: all write_layout may replace there.
_WRITES = {
    "mevis": ("train", "valid_u", "valid"),
    "refytvos": ("train", "valid", "meta_expressions"),
    "davis17": ("train", "valid", "meta_expressions"),
    "reasonvos": ("JPEGImages", "Annotations", "meta_expressions.json"),
    "image_json": ("images", "refcoco_like.json"),
}


def write_layout(dataset: SyntheticDataset, layout: str, out_dir: str | Path, overwrite: bool = False) -> Mapping:
    """Write `dataset` in `layout` under out_dir; returns {(video, exp_id): (synthetic video, objects)}.

    out_dir is claimed with vrsjax.outdir.claim (a non-empty folder vrsjax did not write is refused unless overwrite).
    The dataset must come from write_dataset(..., keep_arrays=True) (the default): the masks are re-encoded."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out = claim(out_dir, _WRITES[layout], overwrite=overwrite, tool=f"vrsjax data synth --layout {layout}")
    writer = {
        "mevis": _mevis,
        "refytvos": _refytvos,
        "davis17": _davis17,
        "reasonvos": _reasonvos,
        "image_json": _image_json,
    }[layout]
    return writer(dataset, out)


def flat(name: str) -> str:
    return name.replace("/", "_")


def _copy_frames(dataset: SyntheticDataset, video: SyntheticVideo, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{t:05d}" for t in range(video.num_frames)]
    for name in names:
        shutil.copyfile(dataset.root / "JPEGImages" / video.name / f"{name}.jpg", folder / f"{name}.jpg")
    return names


def _dump(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def _mevis(dataset: SyntheticDataset, out: Path) -> Mapping:
    mapping: Mapping = {}
    for split, source_split, with_masks in (
        ("train", "train", True),
        ("valid_u", "valid", True),
        ("valid", "valid", False),
    ):
        videos, mask_dict = {}, {}
        for vid in (v for v in dataset.videos.values() if v.split == source_split):
            names = _copy_frames(dataset, vid, out / split / "JPEGImages" / flat(vid.name))
            exps = {}
            for exp_id, exp in vid.expressions.items():
                if exp["type_id"] == 2:  # MeViS has no no-target expressions
                    continue
                exps[exp_id] = {"exp": exp["exp"], "obj_id": exp["obj_id"], "anno_id": exp["anno_id"]}
                mapping[(flat(vid.name), exp_id)] = (vid.name, exp["obj_id"])
            for k, anno in enumerate(vid.anno_ids):
                mask_dict[str(anno)] = [encode_rle(m) if m.any() else None for m in vid.object_masks[:, k]]
            videos[flat(vid.name)] = {"expressions": exps, "vid_id": len(videos), "frames": names}
        _dump(out / split / "meta_expressions.json", {"videos": videos})
        if with_masks:
            _dump(out / split / "mask_dict.json", mask_dict)
    return mapping


def _palette_png(path: Path, masks: np.ndarray) -> None:
    """uint8[K, H, W] disjoint object masks -> a palette PNG with object k drawn as value k + 1."""
    values = np.zeros(masks.shape[1:], np.uint8)
    for k in range(masks.shape[0]):
        values[masks[k] > 0] = k + 1
    image = Image.fromarray(values, mode="P")
    image.putpalette([c for i in range(256) for c in ((i * 67) % 256, (i * 151) % 256, (i * 29) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _ytvos_like(dataset: SyntheticDataset, out: Path, annotated_splits: tuple[str, ...], davis: bool) -> Mapping:
    mapping: Mapping = {}
    for split in ("train", "valid"):
        videos, objects = {}, {}
        for vid in (v for v in dataset.videos.values() if v.split == split):
            name = flat(vid.name)
            names = _copy_frames(dataset, vid, out / split / "JPEGImages" / name)
            if split in annotated_splits:
                for t, frame in enumerate(names):
                    _palette_png(out / split / "Annotations" / name / f"{frame}.png", vid.object_masks[t])
            exps = {}
            for k, shape in enumerate(vid.shapes):
                texts = [f"the {shape.name}"]
                if davis:  # annotator 1 first-frame, 1 full-video, 2 first-frame, 2 full-video
                    texts = [
                        f"a {shape.name}",
                        f"the {shape.name} moving right",
                        f"{shape.name}",
                        f"the {shape.name} crossing the frame",
                    ]
                for text in texts:
                    exp_id = str(len(exps))
                    exps[exp_id] = {"exp": text, "obj_id": str(k + 1)}
                    mapping[(name, exp_id)] = (vid.name, [k])
            videos[name] = {"expressions": exps, "frames": names}
            objects[name] = {"objects": {str(k + 1): {"category": s.shape} for k, s in enumerate(vid.shapes)}}
        _dump(out / "meta_expressions" / split / "meta_expressions.json", {"videos": videos})
        _dump(out / split / "meta.json", {"videos": objects})
    return mapping


def _refytvos(dataset: SyntheticDataset, out: Path) -> Mapping:
    return _ytvos_like(dataset, out, ("train",), davis=False)


def _davis17(dataset: SyntheticDataset, out: Path) -> Mapping:
    return _ytvos_like(dataset, out, ("train", "valid"), davis=True)


def _reasonvos(dataset: SyntheticDataset, out: Path) -> Mapping:
    mapping: Mapping = {}
    videos = {}
    for i, vid in enumerate(dataset.videos.values()):
        name, source = flat(vid.name), ("MOSE", "mevis", "BURST", "VIPSeg")[i % 4]
        names = _copy_frames(dataset, vid, out / "JPEGImages" / name)
        exps = {}
        for exp in vid.expressions.values():
            if len(exp["obj_id"]) != 1:  # ReasonVOS targets are single objects
                continue
            k = exp["obj_id"][0]
            exp_id = str(len(exps))
            exps[exp_id] = {"exp_text": exp["exp"], "obj_id": k + 1}
            mapping[(name, exp_id)] = (vid.name, [k])
            folder = out / "Annotations" / f"{source}_{name}_{k + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(names):
                Image.fromarray(vid.object_masks[t, k] * np.uint8(255), mode="L").save(folder / f"{frame}.png")
        videos[name] = {"source": source, "frames": names, "is_sent": i % 2 == 0, "expressions": exps}
    _dump(out / "meta_expressions.json", {"videos": videos})
    return mapping


def _image_json(dataset: SyntheticDataset, out: Path) -> Mapping:
    """images/<video>.jpg (each video's first frame) and refcoco_like.json, one record per expression whose
    objects are all visible there."""
    mapping: Mapping = {}
    records = []
    for vid in dataset.videos.values():
        image = f"images/{flat(vid.name)}.jpg"
        (out / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset.root / "JPEGImages" / vid.name / "00000.jpg", out / image)
        height, width = vid.object_masks.shape[2:]
        for exp_id, exp in vid.expressions.items():
            masks = vid.object_masks[0, exp["obj_id"]]
            if not exp["obj_id"] or not all(m.any() for m in masks):
                continue
            extents = T.object_extents(masks[None])[0]
            records.append(
                {
                    "image": image,
                    "text": exp["exp"],
                    "image_id": flat(vid.name),
                    "ann_id": exp_id,
                    "img_height": int(height),
                    "img_width": int(width),
                    "mask": [encode_rle(m) for m in masks],
                    "bbox": [[int(v) for v in e] for e in extents],
                    "solution": json.dumps(T.vision_reasoner_targets(masks)),
                }
            )
            mapping[(flat(vid.name), exp_id)] = (vid.name, exp["obj_id"])
    _dump(out / "refcoco_like.json", records)
    return mapping
