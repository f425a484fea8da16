"""Write one benchmark's section into BENCHMARKS.md, replacing that section only."""

from __future__ import annotations

import platform
import re
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    import os

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    )


def write_section(title: str, body: str, path: Path = PATH) -> None:
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nSide-by-side measurements; each section is rewritten by its script in `benchmarks/`.\n"
    )
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
