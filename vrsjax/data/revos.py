"""Readers for the ReVOS and MeViS layouts: frames as JPEGImages/<video>/<frame>.jpg, masks as one COCO-RLE list
per annotation id in mask_dict.json, expressions in meta_expressions*.json.

ReVOS (cilinyan/ReVOS-api) ships `meta_expressions_train_.json` and `meta_expressions_valid_.json` (note the
trailing underscore; Veason-R1 trains on its subset `meta_expressions_train_select.json`), `mask_dict.json`
shared by both splits, and `mask_dict_foreground.json` ({video: {"masks_rle", "foreground_ratio"}}, the union of
the video's annotated objects, used by the robustness metric). Video names may contain slashes
("UVO/all/-fbscFfkh4M"). Expressions carry `exp`, `obj_id`, `anno_id` and `type_id` (0 referring, 1 reasoning,
2 no target). MeViS (henghuiding/MeViS) has the same structure per split folder (train/, valid_u/, valid/) with
`meta_expressions.json`, no type_id and no height/width; its valid/ split has no mask_dict.json.

As in Veason-R1 and VISA, frame names are sorted and mask_dict[anno_id][t] is the RLE (or null) of frame t; when
a metadata file lists frames out of order, the RLEs are permuted with their frames. Every anno_id must exist in
mask_dict.json with one entry per frame and every RLE must have the frame's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.files import frame_paths, load_json, meta_videos, video_size
from vrsjax.data.masks import RleMasks, check_rle
from vrsjax.data.samples import ExpressionDataset, ExpressionSample

REVOS_META_NAMES = ("meta_expressions_{split}_.json", "meta_expressions_{split}.json")


def revos_meta_file(root: str | Path, split: str) -> Path:
    """The ReVOS metadata file of a split: meta_expressions_<split>_.json as released, or without the underscore."""
    root = Path(root)
    for pattern in REVOS_META_NAMES:
        path = root / pattern.format(split=split)
        if path.is_file():
            return path
    return root / REVOS_META_NAMES[0].format(split=split)  # load_json reports it missing


def read_revos(
    root: str | Path,
    split: str = "train",
    *,
    meta_file: str | Path | None = None,
    include_no_target: bool = True,
    with_foreground: bool = False,
    skip_bad_samples: bool = False,
    check_files: bool = True,
) -> ExpressionDataset:
    """ReVOS at `root` (JPEGImages/, mask_dict.json, meta_expressions_<split>_.json).

    meta_file: another expressions file (e.g. Veason-R1's meta_expressions_train_select.json), relative to root.
    include_no_target: keep type_id 2 expressions (Veason-R1's training loader drops them).
    with_foreground: attach mask_dict_foreground.json's per-video union as sample.extra["foreground"] (RleMasks).
    """
    root = Path(root)
    meta_path = root / meta_file if meta_file is not None else revos_meta_file(root, split)
    foreground = root / "mask_dict_foreground.json" if with_foreground else None
    dataset = _read_rle_layout(
        "revos", root, split, meta_path, root / "mask_dict.json", skip_bad_samples, check_files, foreground
    )
    if not include_no_target:
        dataset = dataset.filter(lambda s: s.type_id != 2)
    return dataset


def read_mevis(
    root: str | Path, split: str = "train", *, skip_bad_samples: bool = False, check_files: bool = True
) -> ExpressionDataset:
    """MeViS: root is the MeViS folder holding train/, valid_u/, valid/ (or one split folder itself)."""
    root = Path(root)
    split_dir = root / split if (root / split).is_dir() else root
    return _read_rle_layout(
        "mevis",
        split_dir,
        split,
        split_dir / "meta_expressions.json",
        split_dir / "mask_dict.json",
        skip_bad_samples,
        check_files,
    )


def _read_rle_layout(
    name: str,
    root: Path,
    split: str,
    meta_path: Path,
    mask_path: Path,
    skip: bool,
    check_files: bool,
    foreground_path: Path | None = None,
) -> ExpressionDataset:
    reader = _RleLayout(name, root, meta_path, mask_path, check_files, foreground_path)
    skip_log = SkipLog(f"{name}/{split}")
    samples: list[ExpressionSample] = []
    for video, vid_data in reader.videos.items():
        expressions = vid_data.get("expressions", {}) if isinstance(vid_data, dict) else {}
        try:
            frames = reader.video_frames(video, vid_data)
        except DataError as error:
            raise_or_skip(error, skip_log if skip else None, max(1, len(expressions)))
            continue
        for exp_id, exp in expressions.items():
            try:
                samples.append(reader.expression(video, str(exp_id), exp, frames))
            except DataError as error:
                raise_or_skip(error, skip_log if skip else None)
    return ExpressionDataset(name, str(root), split, tuple(samples), skip_log)


@dataclass(frozen=True)
class _Frames:
    names: tuple[str, ...]
    order: tuple[int, ...]  # order[t]: the metadata position of sorted frame t (mask_dict is indexed that way)
    paths: tuple[str, ...]
    height: int
    width: int


class _RleLayout:
    """Shared state of one ReVOS/MeViS read: the loaded JSON files and which anno_ids were already validated."""

    def __init__(self, name, root, meta_path, mask_path, check_files, foreground_path):  # noqa: ANN001
        self.name, self.root, self.meta_path, self.mask_path = name, root, meta_path, mask_path
        self.check_files = check_files
        self.videos = meta_videos(load_json(meta_path, name), name, meta_path)
        self.mask_dict = load_json(mask_path, name, "mask") if mask_path.is_file() else None
        if self.mask_dict is not None and not isinstance(self.mask_dict, dict):
            raise data_error(
                "expected a JSON object {anno_id: [RLE or null per frame]}",
                dataset=name,
                file=str(mask_path),
                reason="malformed_json",
            )
        self.foreground = None if foreground_path is None else load_json(foreground_path, name, "foreground mask")
        self.foreground_path = foreground_path
        self.checked: dict[str, tuple[int, int, int]] = {}
        self.foreground_cache: dict[str, dict] = {}

    def video_frames(self, video: str, vid_data: Any) -> _Frames:
        where = dict(dataset=self.name, video=video, file=str(self.meta_path))
        if not isinstance(vid_data, dict) or not isinstance(vid_data.get("frames"), list):
            raise data_error("the video entry has no 'frames' list", **where, reason="malformed_json")
        raw = [str(f) for f in vid_data["frames"]]
        if not raw:
            raise data_error("the video has no frames", **where, reason="empty_video")
        order = tuple(sorted(range(len(raw)), key=raw.__getitem__))  # sorted by name, as both reference loaders do
        names = tuple(raw[i] for i in order)
        paths = frame_paths(self.root / "JPEGImages" / video, names, ".jpg", self.name, video, self.check_files)
        height, width = video_size(paths[0], vid_data, self.name, video, self.meta_path)
        return _Frames(names, order, paths, height, width)

    def expression(self, video: str, exp_id: str, exp: Any, frames: _Frames) -> ExpressionSample:
        if not isinstance(exp, dict) or "exp" not in exp:
            raise data_error(
                "expression entry without 'exp'",
                dataset=self.name,
                video=video,
                expression=exp_id,
                file=str(self.meta_path),
                reason="malformed_json",
            )
        anno_ids = tuple(str(a) for a in exp.get("anno_id", []))
        masks = None
        if self.mask_dict is not None:
            for anno in anno_ids:
                self._check_anno(video, exp_id, anno, frames)
            rles = tuple(tuple(self.mask_dict[anno][i] for i in frames.order) for anno in anno_ids)
            masks = RleMasks(rles, frames.height, frames.width, str(self.mask_path))
        type_id = exp.get("type_id")
        return ExpressionSample(
            dataset=self.name,
            video=video,
            exp_id=exp_id,
            expression=str(exp["exp"]),
            frame_names=frames.names,
            frame_paths=frames.paths,
            obj_ids=tuple(int(o) for o in exp.get("obj_id", [])),
            anno_ids=anno_ids,
            type_id=None if type_id is None else int(type_id),
            height=frames.height,
            width=frames.width,
            masks=masks,
            extra=self._foreground(video, exp_id, frames),
        )

    def _check_anno(self, video: str, exp_id: str, anno: str, frames: _Frames) -> None:
        shape = (len(frames.names), frames.height, frames.width)
        if self.checked.get(anno) == shape:
            return
        where = dict(dataset=self.name, video=video, expression=exp_id, file=str(self.mask_path))
        if anno not in self.mask_dict:
            raise data_error(
                f"anno_id {anno} is not in mask_dict.json",
                **where,
                reason="missing_anno",
                fix="use the mask_dict.json released with these expressions",
            )
        per_frame = self.mask_dict[anno]
        if not isinstance(per_frame, list) or len(per_frame) != shape[0]:
            got = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
            raise data_error(
                f"anno_id {anno} has {got} mask entries for {shape[0]} frames", **where, reason="mask_length"
            )
        for t, rle in enumerate(per_frame):
            if rle is not None:
                try:
                    check_rle(rle, frames.height, frames.width)
                except ValueError as e:
                    raise data_error(f"anno_id {anno} frame {t}: {e}", **where, reason="rle_size") from e
        self.checked[anno] = shape

    def _foreground(self, video: str, exp_id: str, frames: _Frames) -> dict:
        if self.foreground is None:
            return {}
        if video not in self.foreground_cache:
            self.foreground_cache[video] = self._read_foreground(video, exp_id, frames)
        return self.foreground_cache[video]

    def _read_foreground(self, video: str, exp_id: str, frames: _Frames) -> dict:
        entry = self.foreground.get(video) if isinstance(self.foreground, dict) else None
        rles = entry.get("masks_rle") if isinstance(entry, dict) else None
        if not isinstance(rles, list) or len(rles) != len(frames.names):
            raise data_error(
                "no foreground mask for every frame of this video",
                dataset=self.name,
                video=video,
                expression=exp_id,
                file=str(self.foreground_path),
                reason="missing_anno",
            )
        for t, rle in enumerate(rles):
            try:
                check_rle(rle, frames.height, frames.width)
            except ValueError as e:
                raise data_error(
                    f"foreground frame {t}: {e}",
                    dataset=self.name,
                    video=video,
                    expression=exp_id,
                    file=str(self.foreground_path),
                    reason="rle_size",
                ) from e
        foreground = (tuple(rles[i] for i in frames.order),)
        return {"foreground": RleMasks(foreground, frames.height, frames.width, str(self.foreground_path))}
