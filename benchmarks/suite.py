"""`vrsjax bench`: every benchmark of the project in one run, each side by side with its reference, regenerating
BENCHMARKS.md (the machine, the package versions, a summary table, then one section per benchmark).

Each benchmark is a script in this folder with `run(quick: bool = False) -> str`, which measures, writes its section
with `report.write_section` and returns the section body (a script that only has `main()` runs that, with no
arguments, and is skipped under --quick). Every benchmark runs in its own child process with a deadline, so one that
fails, hangs or leaks threads and memory does not take the others with it; its outcome (ok, skipped, failed) and
wall time go into the summary, and a failure's traceback tail is printed. Lines of a body that start with
`**Skipped:**` (see `report.skipped`) are carried into the summary, so what did not run says why.

    python benchmarks/suite.py [--only NAME,...] [--quick] [--repeats N] [--out BENCHMARKS.md]

The benchmarks folder is not an installed package: `vrsjax bench` runs from a repository checkout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402

# (script name, what it compares), in the order they run and appear; scripts found in this folder but not named here
# (a benchmark added later) run after these.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("metrics", "J and F vs the per-frame DAVIS 2017 reference"),
    ("processor", "Processor vs transformers' Qwen2.5-VL processor"),
    ("model_forward", "forward and forward+backward vs transformers"),
    ("rollout", "group sampling vs transformers generate"),
    ("grpo_loss", "GRPO loss functions vs verl's core_algos (where installed)"),
    ("grpo_step", "GRPO step, per-sequence vs shared-prompt passes"),
    ("grpo_vs_trl", "GRPO step vs TRL GRPOTrainer (when trl is installed)"),
    ("reward", "SAM2 cached group vs the official per-response path"),
    ("xmem", "XMem propagation vs the official implementation"),
    ("data", "grain pipeline vs direct JSON + JPEG + RLE reading"),
    ("convert_memory", "conversion peak memory vs checkpoint size"),
    ("scaling", "sharded GRPO micro step on 8 simulated devices and 2 processes"),
    ("accelerator", "MFU, decode roofline and SAM2 throughput on a GPU or TPU"),
)
NOT_BENCHMARKS = {"report", "suite"}
DEFAULT_TIMEOUT_S = {False: 4 * 3600, True: 1800}


def available() -> list[tuple[str, str]]:
    """The benchmarks present in this folder: the named ones first, then any other script with run() or main()."""
    named = [(name, what) for name, what in BENCHMARKS if (HERE / f"{name}.py").exists()]
    known = {name for name, _ in BENCHMARKS} | NOT_BENCHMARKS
    extra = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem not in known and re.search(r"^def (run|main)\(", path.read_text(), re.M):
            extra.append((path.stem, (path.read_text().split('"""')[1:2] or [""])[0].strip().splitlines()[0]))
    return named + extra


def select(only: str | None) -> list[tuple[str, str]]:
    """--only NAME,... -> those benchmarks in suite order; an unknown name raises listing the valid ones."""
    found = available()
    if not only:
        return found
    names = [n.strip().removesuffix(".py") for n in only.split(",") if n.strip()]
    valid = [name for name, _ in found]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {', '.join(valid)}")
    return [(name, what) for name, what in found if name in names]


# ----------------------------------------------------------------------------- one benchmark, in a child process


def _sections(path: Path) -> dict[str, str]:
    text = path.read_text() if path.exists() else ""
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, re.S | re.M)}


def child(name: str, quick: bool, result_path: Path) -> int:
    """Run one benchmark in this process and write {status, reason, seconds, titles, body} to `result_path`."""
    import importlib.util

    before = _sections(report.output())
    start = time.perf_counter()
    result = {"status": "ok", "reason": "", "body": ""}
    try:
        spec = importlib.util.spec_from_file_location(f"vrsjax_bench_{name}", HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
        sys.argv = [str(HERE / f"{name}.py")]  # a main() parses no suite arguments
        spec.loader.exec_module(module)
        if hasattr(module, "run"):
            result["body"] = module.run(quick=quick) or ""
        elif quick:
            result |= {"status": "skipped", "reason": "no run(quick) entry point; its main() is the full benchmark"}
        elif hasattr(module, "main"):
            module.main()
        else:
            result |= {"status": "failed", "reason": "neither run(quick) nor main() defined"}
    except Exception as err:  # recorded and reported; the suite goes on with the next benchmark
        traceback.print_exc()
        result |= {
            "status": "failed",
            "reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
        }
    result["seconds"] = time.perf_counter() - start
    after = _sections(report.output())
    result["titles"] = [t for t, body in after.items() if before.get(t) != body]
    if not result["body"] and result["titles"]:
        result["body"] = "\n\n".join(after[t] for t in result["titles"])
    skips = [line.strip() for line in result["body"].splitlines() if line.strip().startswith("**Skipped:**")]
    if skips and result["status"] == "ok":
        result["reason"] = "; ".join(s.removeprefix("**Skipped:**").strip() for s in skips)
    result_path.write_text(json.dumps(result))
    return 0 if result["status"] != "failed" else 1


def run_one(name: str, quick: bool, out: Path, timeout_s: float, repeats: int | None, env: dict) -> dict:
    """Start the child for `name`, stream its output, kill it at the deadline; -> its result record."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, str(HERE / "suite.py"), "--child", name, "--out", str(out)]
        cmd += ["--quick"] if quick else []
        child_env = dict(env) | {"VRSJAX_BENCH_RESULT": str(result_path)}
        child_env |= {"VRSJAX_BENCH_REPEATS": str(repeats)} if repeats else {}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=child_env)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {
                "status": "failed",
                "reason": f"timed out after {timeout_s:.0f} s",
                "seconds": timeout_s,
                "body": "",
            }
        if result_path.exists():
            return json.loads(result_path.read_text())
        seconds = time.perf_counter() - start
        return {
            "status": "failed",
            "reason": f"child exited with code {proc.returncode}",
            "seconds": seconds,
            "body": "",
        }


# ----------------------------------------------------------------------------- the whole run


_BOLD_RATIO = re.compile(r"\*\*([0-9.]+x|x[0-9.]+)\*\*")


def headline(body: str) -> str:
    """The first bold ratio of a section body ('**3.9x**'): the figure its benchmark puts forward."""
    found = _BOLD_RATIO.search(body)
    return found.group(1) if found else ""


def summary_rows(results: dict[str, dict], whats: dict[str, str], previous: str) -> list[str]:
    """Table rows for this run's benchmarks, keeping the previous run's rows for the ones not run now."""
    kept = {}
    for line in previous.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            kept[cells[0].strip("`")] = line
    order = [name for name, _ in available()]
    rows = []
    for name in order + [n for n in kept if n not in order]:
        if name in results:
            r = results[name]
            note = r.get("reason", "").replace("|", "/").replace("\n", " ")
            mode = " (quick)" if r.get("quick") else ""
            rows.append(
                f"| `{name}` | {whats.get(name, '')} | {r['status']}{mode} | {r['seconds']:.0f} "
                f"| {headline(r.get('body', ''))} | {note} |"
            )
        elif name in kept:
            rows.append(kept[name])
    return rows


def preamble(rows: list[str], command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# Benchmarks

Generated by `vrsjax bench` (`benchmarks/suite.py`): every benchmark side by side with its reference, in one
run. Each section below is rewritten by its script; ratios are reference time over vrsjax time (higher is
better for vrsjax) unless a section says otherwise. Timings are medians with their spread (interquartile range
from 4 repeats up, min-max below) where a benchmark repeats; the summary keeps the previous row of a benchmark
not run this time.

- Last run: `{command}`, {now}.
- Machine: {report.machine()}; accelerator: {report.accelerator()}.
- Packages: {report.versions()}.

| benchmark | compares | status | wall (s) | headline | note |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
"""


def run_suite(
    only: str | None = None,
    quick: bool = False,
    repeats: int | None = None,
    out: str | Path | None = None,
    timeout_s: float | None = None,
    xmem_official: str | None = None,
) -> dict[str, dict]:
    """Run the selected benchmarks one after the other and regenerate `out`; -> {name: result record}."""
    out = Path(out) if out else report.PATH
    chosen = select(only)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH", "")) if p)
    if xmem_official:
        env["VRSJAX_XMEM_OFFICIAL"] = str(xmem_official)
    timeout_s = timeout_s or DEFAULT_TIMEOUT_S[quick]
    results = {}
    for i, (name, what) in enumerate(chosen, 1):
        print(f"[bench {i}/{len(chosen)}] {name}: {what}", flush=True)
        results[name] = run_one(name, quick, out, timeout_s, repeats, env) | {"quick": quick}
        r = results[name]
        print(
            f"[bench {i}/{len(chosen)}] {name}: {r['status']} in {r['seconds']:.1f} s {r.get('reason', '')}", flush=True
        )
    previous = out.read_text().split("\n## ", 1)[0] if out.exists() else ""
    command = "vrsjax bench" + (f" --only {only}" if only else "") + (" --quick" if quick else "")
    command += f" --repeats {repeats}" if repeats else ""
    rows = summary_rows(results, dict(available()), previous)
    report.write_header(preamble(rows, command), out)
    print(f"wrote {out}")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vrsjax bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (benchmarks that repeat)")
    parser.add_argument("--out", default=None, help="the markdown file to regenerate (default: BENCHMARKS.md)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is killed")
    parser.add_argument("--xmem-official", default=None, help="a checkout of hkchengrex/XMem for the XMem comparison")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        report.set_output(args.out or report.PATH)
        if args.repeats:
            os.environ["VRSJAX_BENCH_REPEATS"] = str(args.repeats)
        result = Path(tempfile.gettempdir()) / f"vrsjax_bench_{args.child}_{os.getpid()}.json"
        return child(args.child, args.quick, Path(os.environ.get("VRSJAX_BENCH_RESULT", result)))
    if args.list:
        for name, what in available():
            print(f"{name:16s} {what}")
        return 0
    try:
        results = run_suite(args.only, args.quick, args.repeats, args.out, args.timeout, args.xmem_official)
    except ValueError as err:  # an unknown benchmark name: one line, no traceback
        raise SystemExit(f"vrsjax bench: {err}") from err
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
