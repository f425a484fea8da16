"""Shared by every benchmark: where BENCHMARKS.md is, writing one section of it, the machine and package versions, and
median + spread of repeated timings.

`write_section(title, body)` replaces the `## title` section of the current output file (BENCHMARKS.md at the repo
root unless `set_output(path)` or the `VRSJAX_BENCHMARKS_MD` environment variable names another), leaving the other
sections alone. `vrsjax bench --out FILE` sets the output for every benchmark it runs, including the scripts that
call `write_section` without a path.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import statistics
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nSide-by-side measurements; each section is rewritten by its script in `benchmarks/`.\n"
_output: Path | None = None


def set_output(path: str | Path | None) -> None:
    """Send every later `write_section` without an explicit path to `path` (None: back to the default)."""
    global _output
    _output = None if path is None else Path(path)


def output() -> Path:
    """The file `write_section` writes by default: set_output's, else $VRSJAX_BENCHMARKS_MD, else BENCHMARKS.md."""
    if _output is not None:
        return _output
    return Path(os.environ["VRSJAX_BENCHMARKS_MD"]) if os.environ.get("VRSJAX_BENCHMARKS_MD") else PATH


def cpu_model() -> str:
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        if names:
            return names[0].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    if Path("/proc/meminfo").exists():
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if found:
            return int(found.group(1)) / 2**20
    return None


def machine() -> str:
    """One line: CPU model, cores, memory, Python (the accelerator is named by `accelerator()`)."""
    memory = memory_gib()
    ram = f", {memory:.0f} GiB RAM" if memory else ""
    return f"{cpu_model()}, {os.cpu_count()} CPU cores{ram}, Python {platform.python_version()}"


def accelerator() -> str:
    """The JAX backend's devices, e.g. '1x NVIDIA H100 80GB HBM3 (gpu)', or 'none (CPU only)'. Imports jax."""
    import jax

    devices = jax.devices()
    if devices[0].platform == "cpu":
        return "none (CPU only)"
    return f"{len(devices)}x {devices[0].device_kind} ({devices[0].platform})"


def versions(packages: tuple[str, ...] = ("jax", "jaxlib", "flax", "torch", "transformers", "sam2")) -> str:
    """'jax 0.10.2, jaxlib 0.10.2, ...' from the installed distributions (no import); 'absent' when missing."""
    out = []
    for name in packages:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} absent")
    return ", ".join(out)


def spread(times: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of repeated measurements (quartiles equal min/max below 4 samples)."""
    ordered = sorted(times)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def fmt(times: list[float], digits: int = 3) -> str:
    """'1.234 [1.200-1.300]': the median and, in brackets, the IQR (4+ repeats) or min-max range."""
    s = spread(times)
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}-{s['q3']:.{digits}f}]"


def spread_note(repeats: int) -> str:
    what = "interquartile range" if repeats >= 4 else "min-max range"
    return f"median [{what}] of {repeats} repeats"


def repeats(default: int) -> int:
    """Repeats per timing: `vrsjax bench --repeats N` (via $VRSJAX_BENCH_REPEATS) or the benchmark's default."""
    value = os.environ.get("VRSJAX_BENCH_REPEATS")
    return int(value) if value else default


def skipped(reason: str) -> str:
    """Print and return the line a section carries for a part that did not run; the suite lists it in its summary."""
    line = f"**Skipped:** {reason}"
    print(line, flush=True)
    return line


def read_section(title: str, path: Path | None = None) -> str | None:
    """The body of the `## title` section, or None when the file or section is missing."""
    path = output() if path is None else Path(path)
    if not path.exists():
        return None
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", path.read_text(), re.S | re.M)
    return found.group(1).strip() if found else None


def write_section(title: str, body: str, path: Path | None = None) -> None:
    """Replace (or append) the `## title` section of `path` (default: `output()`)."""
    path = output() if path is None else Path(path)
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text, count=1)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    path.write_text(text.rstrip() + "\n")


def write_header(preamble: str, path: Path | None = None) -> None:
    """Replace what comes before the first `## ` section (the title and the suite's preamble)."""
    path = output() if path is None else Path(path)
    text = path.read_text() if path.exists() else ""
    first = re.search(r"^## ", text, re.M)
    rest = text[first.start() :] if first else ""
    path.write_text(preamble.rstrip() + "\n\n" + rest.rstrip() + "\n")
