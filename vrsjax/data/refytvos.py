"""Readers for Ref-YouTube-VOS and Ref-DAVIS17 in the layout ReferFormer established (and VISA, VideoLISA and
Sa2VA read): <root>/<split>/JPEGImages/<video>/<frame>.jpg, <root>/<split>/Annotations/<video>/<frame>.png
(palette PNGs whose pixel value is the object id), <root>/<split>/meta.json ({"videos": {v: {"objects": {id:
{"category"}}}}}) and <root>/meta_expressions/<split>/meta_expressions.json ({"videos": {v: {"expressions":
{"0": {"exp", "obj_id"}}, "frames": [...]}}}, obj_id a string).

Ref-DAVIS17 comes from DAVIS 2017 through ReferFormer's `convert_davis_to_ytvos.py`: four expressions per object,
in exp_id order annotator 1 first-frame, annotator 1 full-video, annotator 2 first-frame, annotator 2 full-video
(kept as extra["annotator"] and extra["kind"]); obj ids start at 1 and both splits have annotations. Ref-YouTube-VOS
ships annotations for train only: valid/test samples have masks=None. Frames are sorted by name and each
expression refers to one object, mask = (PNG value == obj_id).
"""

from __future__ import annotations

from pathlib import Path

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.files import frame_paths, image_size, load_json, meta_videos, video_size
from vrsjax.data.masks import PaletteMasks
from vrsjax.data.samples import ExpressionDataset, ExpressionSample

DAVIS_EXPRESSION_KINDS = ((1, "first_frame"), (1, "full_video"), (2, "first_frame"), (2, "full_video"))


def read_refytvos(
    root: str | Path, split: str = "train", *, skip_bad_samples: bool = False, check_files: bool = True
) -> ExpressionDataset:
    """Ref-YouTube-VOS at root (train/, valid/, meta_expressions/)."""
    return _read_palette_layout("refytvos", Path(root), split, skip_bad_samples, check_files)


def read_davis17(
    root: str | Path, split: str = "valid", *, skip_bad_samples: bool = False, check_files: bool = True
) -> ExpressionDataset:
    """Ref-DAVIS17 at root, converted to the Ref-YouTube-VOS layout (train/, valid/, meta_expressions/)."""
    return _read_palette_layout("davis17", Path(root), split, skip_bad_samples, check_files)


def _read_palette_layout(name: str, root: Path, split: str, skip: bool, check_files: bool) -> ExpressionDataset:
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    videos = meta_videos(load_json(meta_path, name), name, meta_path)
    split_dir = root / split
    objects_path = split_dir / "meta.json"
    objects = meta_videos(load_json(objects_path, name), name, objects_path) if objects_path.is_file() else {}
    has_masks = (split_dir / "Annotations").is_dir()
    skip_log = SkipLog(f"{name}/{split}")
    samples: list[ExpressionSample] = []
    for video, vid_data in videos.items():
        expressions = vid_data.get("expressions", {}) if isinstance(vid_data, dict) else {}
        try:
            names, paths, masks, height, width = _video(
                name, split_dir, video, vid_data, meta_path, has_masks, check_files
            )
        except DataError as error:
            raise_or_skip(error, skip_log if skip else None, max(1, len(expressions)))
            continue
        for exp_id, exp in expressions.items():
            where = dict(dataset=name, video=video, expression=str(exp_id), file=str(meta_path))
            if not isinstance(exp, dict) or "exp" not in exp or "obj_id" not in exp:
                raise_or_skip(
                    data_error("expression entry needs 'exp' and 'obj_id'", **where, reason="malformed_json"),
                    skip_log if skip else None,
                )
                continue
            obj_id = int(exp["obj_id"])
            extra = {"category": objects.get(video, {}).get("objects", {}).get(str(exp["obj_id"]), {}).get("category")}
            if name == "davis17" and str(exp_id).isdigit():
                extra["annotator"], extra["kind"] = DAVIS_EXPRESSION_KINDS[int(exp_id) % 4]
            samples.append(
                ExpressionSample(
                    dataset=name,
                    video=video,
                    exp_id=str(exp_id),
                    expression=str(exp["exp"]),
                    frame_names=names,
                    frame_paths=paths,
                    obj_ids=(obj_id,),
                    anno_ids=(),
                    type_id=None,
                    height=height,
                    width=width,
                    masks=None if masks is None else PaletteMasks(masks, (obj_id,), height, width),
                    extra=extra,
                )
            )
    return ExpressionDataset(name, str(root), split, tuple(samples), skip_log)


def _video(name, split_dir: Path, video: str, vid_data, meta_path: Path, has_masks: bool, check_files: bool):  # noqa: ANN001
    if not isinstance(vid_data, dict) or not isinstance(vid_data.get("frames"), list):
        raise data_error(
            "the video entry has no 'frames' list",
            dataset=name,
            video=video,
            file=str(meta_path),
            reason="malformed_json",
        )
    names = tuple(sorted(str(f) for f in vid_data["frames"]))
    if not names:
        raise data_error(
            "the video has no frames", dataset=name, video=video, file=str(meta_path), reason="empty_video"
        )
    paths = frame_paths(split_dir / "JPEGImages" / video, names, ".jpg", name, video, check_files)
    height, width = video_size(paths[0], {}, name, video)
    masks = None
    if has_masks:
        masks = frame_paths(split_dir / "Annotations" / video, names, ".png", name, video, check_files, "annotation")
        if check_files:
            _check_annotation_size(name, video, masks[0], height, width)
    return names, paths, masks, height, width


def _check_annotation_size(name: str, video: str, path: str, height: int, width: int) -> None:
    size = image_size(path, name, video)
    if size != (height, width):
        raise data_error(
            f"annotation is {size[0]}x{size[1]} but the frames are {height}x{width}",
            dataset=name,
            video=video,
            file=path,
            reason="size_mismatch",
        )
