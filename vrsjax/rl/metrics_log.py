"""out_dir/metrics.jsonl, the run's metrics: one JSON object per step, appended as steps finish. A step's line is
written before its checkpoint is complete, so a run killed in between has lines for steps it will train again;
resuming drops them (`keep_until`), and a line torn by the kill is dropped with them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append(path: Path, metrics: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(metrics) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete line of `path` in order ([] when it does not exist); a torn line is skipped."""
    if not path.exists():
        return []
    return [m for m in map(_parse, path.read_text().splitlines()) if m is not None]


def keep_until(path: Path, step: int) -> int:
    """Rewrite `path` with the lines of steps <= `step` only (atomically: a kill leaves the old or the new file);
    returns how many lines were dropped."""
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if (m := _parse(line)) is not None and m.get("step", 0) <= step]
    if len(kept) == len(lines):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return len(lines) - len(kept)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        m = json.loads(line)
    except json.JSONDecodeError:
        return None
    return m if isinstance(m, dict) else None
