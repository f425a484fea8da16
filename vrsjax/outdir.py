"""Output folders that a command may write into without ever deleting what it did not write.

`claim(path, writes)` prepares `path` for a command that writes the top-level entries `writes` (names or glob
patterns, e.g. "JPEGImages", "meta_expressions_*.json"). A missing or empty folder is created and used. A folder
that a vrsjax command claimed before (it holds the marker file MARKER, listing what that command writes) is reused:
what the marker lists is removed, nothing else. Any other non-empty folder is refused unless `overwrite=True` (the
commands' `--overwrite`), and then only the entries matching `writes` are removed. The marker is written before the
command writes anything, so a run that dies half-way still leaves a folder the next run recognises.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from vrsjax.errors import UserError

MARKER = ".vrsjax-output.json"


def claim(
    path: str | Path, writes: Sequence[str], *, overwrite: bool = False, tool: str = "vrsjax", flag: str = "--out"
) -> Path:
    """Make `path` a folder for `tool`'s `writes`; returns it. Raises UserError naming the folder when it is a file
    or a non-empty folder that vrsjax did not write (unless `overwrite`); `flag` names the option in that message."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out}: is a file, not a folder; give a folder (it is created when missing)")
    out.mkdir(parents=True, exist_ok=True)
    previous = _marked(out)
    entries = [entry for entry in out.iterdir() if entry.name != MARKER]
    ours = [e for e in entries if previous is not None and _matches(e.name, previous)]
    foreign = [e for e in entries if e not in ours]
    if foreign and not overwrite:
        raise UserError(_refusal(out, foreign, writes, flag, marked=previous is not None))
    for entry in ours + [e for e in foreign if _matches(e.name, writes)]:
        _remove(entry)
    (out / MARKER).write_text(json.dumps({"tool": tool, "writes": list(writes)}, indent=1) + "\n")
    return out


def _marked(out: Path) -> list[str] | None:
    """The `writes` of the marker in `out`, or None when there is none (or it is not one of ours)."""
    try:
        writes = json.loads((out / MARKER).read_text())["writes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(w) for w in writes] if isinstance(writes, list) else None


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _remove(entry: Path) -> None:
    """A link is removed as a link: what it points to was not ours."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _refusal(out: Path, foreign: list[Path], writes: Sequence[str], flag: str, marked: bool) -> str:
    shown = ", ".join(sorted(e.name for e in foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
    why = "holds files a vrsjax command did not write" if marked else "is not empty and was not written by vrsjax"
    return (
        f"{flag} {out}: {why} ({shown}); choose a new or empty folder, or pass --overwrite to replace only "
        f"{', '.join(writes)} in it"
    )
