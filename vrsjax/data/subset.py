"""Veason-R1's stratified training subset (`training_data_construction/data_sampling.py`), deterministic by seed.

The reference counts referring (type 0) vs reasoning (type 1) expressions, and single- vs multi-object ones (of
any type); each of the four cells (type x objects, the intersections of those lists) gets
`round(p_type * p_objects * size)` draws (the product of the two marginal ratios, not the joint cell share; fewer
if the cell is small); duplicates are removed, then the set is filled up to `size` with a uniform draw from all
remaining expressions of every type (no-target ones included) or, if too large, cut to a uniform `size`. Its
draws go through Python sets, whose order depends on string hashing; here candidates are sorted first and drawn
with numpy, so a seed always gives the same subset. `write_subset` writes the reduced meta_expressions file (all
videos kept, each with only its chosen expressions), like the reference's meta_expressions_train_select.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _groups(videos: dict) -> dict[object, set[tuple[str, str]]]:
    """The reference's four lists: type 0 / type 1 (any object count), one / several objects (any type)."""
    groups: dict[object, set[tuple[str, str]]] = {0: set(), 1: set(), "single": set(), "multi": set()}
    for video, vid in videos.items():
        for exp_id, exp in vid["expressions"].items():
            key, count = (video, str(exp_id)), len(exp.get("obj_id", []))
            if exp.get("type_id") in (0, 1):
                groups[exp["type_id"]].add(key)
            if count >= 1:
                groups["single" if count == 1 else "multi"].add(key)
    return groups


def stratified_subset(videos: dict, size: int, seed: int = 0) -> list[tuple[str, str]]:
    """videos: the "videos" mapping of a ReVOS meta_expressions file -> `size` sorted (video, exp_id) pairs."""
    rng = np.random.default_rng(seed)
    groups = _groups(videos)
    types, objects = len(groups[0]) + len(groups[1]), len(groups["single"]) + len(groups["multi"])
    if not types or not objects:
        raise ValueError("no referring/reasoning expression and no expression with objects to stratify")
    chosen: set[tuple[str, str]] = set()
    for t in (0, 1):
        for o in ("single", "multi"):
            want = round(len(groups[t]) / types * len(groups[o]) / objects * size)
            cell = sorted(groups[t] & groups[o])
            chosen.update(_draw(rng, cell, min(want, len(cell))))
    if len(chosen) < size:
        everything = sorted((v, str(e)) for v, vid in videos.items() for e in vid["expressions"])
        rest = [pair for pair in everything if pair not in chosen]
        chosen.update(_draw(rng, rest, min(size - len(chosen), len(rest))))
    elif len(chosen) > size:
        chosen = set(_draw(rng, sorted(chosen), size))
    return sorted(chosen)


def _draw(rng: np.random.Generator, items: list, count: int) -> list:
    return [items[i] for i in rng.choice(len(items), size=count, replace=False)] if count > 0 else []


def write_subset(meta_path: str | Path, out_path: str | Path, size: int, seed: int = 0) -> tuple[Path, int, int]:
    """Write the subset as a meta_expressions file: every video, with only its chosen expressions.
    -> (out_path, expressions written, expressions in meta_path): fewer than `size` when the file has fewer."""
    meta = json.loads(Path(meta_path).read_text())
    chosen = set(stratified_subset(meta["videos"], size, seed))
    available = sum(len(vid["expressions"]) for vid in meta["videos"].values())
    videos = {
        video: {**vid, "expressions": {e: x for e, x in vid["expressions"].items() if (video, str(e)) in chosen}}
        for video, vid in meta["videos"].items()
    }
    out_path = Path(out_path)
    out_path.write_text(json.dumps({"videos": videos}, indent=4))
    return out_path, len(chosen), available
