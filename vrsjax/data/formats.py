"""One entry point for every dataset layout: `open_dataset(format, root, split)` dispatches to the reader of that
layout, and `detect_format(root)` recognises a layout from the files at its root (ReVOS: mask_dict.json next to
meta_expressions_*.json; MeViS: split folders with meta_expressions.json; Ref-YouTube-VOS / Ref-DAVIS17: a
meta_expressions/ folder; ReasonVOS: meta_expressions.json next to Annotations/; image data: a .json/.jsonl file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vrsjax.data.images import read_image_json
from vrsjax.data.reasonvos import read_reasonvos
from vrsjax.data.refytvos import read_davis17, read_refytvos
from vrsjax.data.revos import read_mevis, read_revos
from vrsjax.data.samples import ExpressionDataset

READERS: dict[str, Callable[..., ExpressionDataset]] = {
    "revos": read_revos,
    "mevis": read_mevis,
    "refytvos": read_refytvos,
    "davis17": read_davis17,
    "reasonvos": read_reasonvos,
    "image_json": read_image_json,
}
DEFAULT_SPLITS = {"revos": "train", "mevis": "train", "refytvos": "train", "davis17": "valid", "reasonvos": "test"}


def detect_format(root: str | Path) -> str:
    """The layout at root (see the module docstring); raises ValueError naming what was looked for."""
    root = Path(root)
    if root.is_file() and root.suffix in (".json", ".jsonl"):
        return "image_json"
    if (root / "mask_dict.json").is_file() and any(root.glob("meta_expressions_*.json")):
        return "revos"
    if (root / "meta_expressions").is_dir():
        return "davis17" if "davis" in root.name.lower() else "refytvos"
    if (root / "meta_expressions.json").is_file() and (root / "Annotations").is_dir():
        return "reasonvos"
    if (root / "meta_expressions.json").is_file() or any(
        (root / s / "meta_expressions.json").is_file() for s in ("train", "valid_u", "valid")
    ):
        return "mevis"
    raise ValueError(
        f"cannot tell the dataset layout of {root}: expected ReVOS (mask_dict.json + meta_expressions_*.json), "
        "MeViS (<split>/meta_expressions.json), Ref-YouTube-VOS/DAVIS (meta_expressions/), ReasonVOS "
        "(meta_expressions.json + Annotations/) or an image .json/.jsonl; pass the format explicitly"
    )


def open_dataset(format: str | None, root: str | Path, split: str | None = None, **kwargs: object) -> ExpressionDataset:
    """Read a dataset split: format one of READERS (None: detect it); kwargs go to the reader
    (skip_bad_samples, check_files, and per-format options such as meta_file or include_no_target for ReVOS)."""
    format = format or detect_format(root)
    if format not in READERS:
        raise ValueError(f"unknown dataset format {format!r}; one of {sorted(READERS)}")
    if format == "image_json":
        return read_image_json(root, **kwargs)
    return READERS[format](root, split or DEFAULT_SPLITS[format], **kwargs)
