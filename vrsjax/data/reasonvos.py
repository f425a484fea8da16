"""Reader for ReasonVOS (showlab/VideoLISA's benchmark): <root>/meta_expressions.json,
<root>/JPEGImages/<video>/<frame>.jpg and one folder of 0/255 grayscale PNGs per expression target,
<root>/Annotations/<source>_<video>_<obj_id>/<frame>.png.

meta_expressions.json is {"videos": {v: {"source", "frames", "is_sent", "expressions": {k: {"exp_text",
"obj_id"}}}}} as VideoLISA's `benchmark_check.py`, inference and evaluation scripts read it; Veason-R1's converted
copy stores "expressions" as a list of {"exp_id", "exp_text", "obj_id"}: both are accepted. The official evaluation
names the mask folder with `source` as written in the JSON; `benchmark_check.py` lower-cases it: the reader tries
both. Frames are sorted by name; every frame needs its mask PNG (the evaluation reads them all).
"""

from __future__ import annotations

from pathlib import Path

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.files import frame_paths, load_json, meta_videos, video_size
from vrsjax.data.masks import BinaryPngMasks
from vrsjax.data.samples import ExpressionDataset, ExpressionSample


def read_reasonvos(
    root: str | Path, split: str = "test", *, skip_bad_samples: bool = False, check_files: bool = True
) -> ExpressionDataset:
    """ReasonVOS at root (meta_expressions.json, JPEGImages/, Annotations/); split is a label only."""
    root = Path(root)
    meta_path = root / "meta_expressions.json"
    videos = meta_videos(load_json(meta_path, "reasonvos"), "reasonvos", meta_path)
    skip_log = SkipLog(f"reasonvos/{split}")
    samples: list[ExpressionSample] = []
    for video, vid_data in videos.items():
        for exp_id, exp in _expressions(vid_data):
            try:
                samples.append(_sample(root, meta_path, video, vid_data, exp_id, exp, check_files))
            except DataError as error:
                raise_or_skip(error, skip_log if skip_bad_samples else None)
    return ExpressionDataset("reasonvos", str(root), split, tuple(samples), skip_log)


def _expressions(vid_data) -> list[tuple[str, dict]]:  # noqa: ANN001
    expressions = vid_data.get("expressions", {}) if isinstance(vid_data, dict) else {}
    if isinstance(expressions, list):  # Veason-R1's converted copy
        return [(str(e.get("exp_id", i)) if isinstance(e, dict) else str(i), e) for i, e in enumerate(expressions)]
    return [(str(k), e) for k, e in expressions.items()]


def _sample(root: Path, meta_path: Path, video: str, vid_data, exp_id: str, exp, check_files: bool):  # noqa: ANN001
    where = dict(dataset="reasonvos", video=video, expression=exp_id, file=str(meta_path))
    if not isinstance(exp, dict) or "exp_text" not in exp or "obj_id" not in exp:
        raise data_error("expression entry needs 'exp_text' and 'obj_id'", **where, reason="malformed_json")
    if not isinstance(vid_data.get("frames"), list) or not vid_data["frames"]:
        raise data_error("the video has no frames", **where, reason="empty_video")
    names = tuple(sorted(str(f) for f in vid_data["frames"]))
    paths = frame_paths(root / "JPEGImages" / video, names, ".jpg", "reasonvos", video, check_files)
    height, width = video_size(paths[0], {}, "reasonvos", video)
    source = str(vid_data.get("source", ""))
    mask_dir = _mask_dir(root, source, video, exp["obj_id"])
    mask_paths = frame_paths(mask_dir, names, ".png", "reasonvos", video, check_files, "annotation", exp_id)
    obj_ids = exp["obj_id"] if isinstance(exp["obj_id"], list) else [exp["obj_id"]]
    return ExpressionSample(
        dataset="reasonvos",
        video=video,
        exp_id=exp_id,
        expression=str(exp["exp_text"]),
        frame_names=names,
        frame_paths=paths,
        obj_ids=tuple(int(o) for o in obj_ids),
        anno_ids=(),
        type_id=None,
        height=height,
        width=width,
        masks=BinaryPngMasks(mask_paths, height, width),
        extra={"source": source, "is_sent": bool(vid_data.get("is_sent", False)), "mask_dir": str(mask_dir)},
    )


def _mask_dir(root: Path, source: str, video: str, obj_id) -> Path:  # noqa: ANN001
    """Annotations/<source>_<video>_<obj_id>, with source as written, else lower-cased (benchmark_check.py)."""
    for src in dict.fromkeys((source, source.lower())):
        folder = root / "Annotations" / f"{src}_{video}_{obj_id}"
        if folder.is_dir():
            return folder
    return root / "Annotations" / f"{source}_{video}_{obj_id}"  # frame_paths reports the missing files
