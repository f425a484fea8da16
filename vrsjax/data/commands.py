"""What `vrsjax data synth | inspect | build | subset | cot | difficulty` run (vrsjax/cli.py parses the arguments
and calls `run`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    commands = {
        "synth": synth,
        "inspect": inspect,
        "build": build,
        "subset": subset,
        "cot": cot,
        "difficulty": difficulty,
    }
    return commands[args.data_command](args)


def synth(args: argparse.Namespace) -> int:
    from vrsjax.data import synthetic

    root = Path(args.out).resolve()  # resolved: `--out .` has a name for the --layout folders beside it
    dataset = synthetic.write_dataset(root, num_videos=args.videos, seed=args.seed, overwrite=args.overwrite)
    expressions = sum(len(v.expressions) for v in dataset.videos.values())
    print(f"wrote {len(dataset.videos)} videos, {expressions} expressions (ReVOS layout) to {dataset.root}")
    if args.layout:
        from vrsjax.data.synthetic_layouts import write_layout

        for layout in args.layout:
            out = root.parent / f"{root.name}_{layout}"
            written = write_layout(dataset, layout, out, overwrite=args.overwrite)
            print(f"wrote {len(written)} expressions in the {layout} layout to {out}")
    return 0


def inspect(args: argparse.Namespace) -> int:
    from vrsjax.data.summary import format_statistics, inspect_dataset

    png = args.png if args.png else None
    stats = inspect_dataset(args.root, args.format, args.split, png, args.expressions)
    print(json.dumps(stats, indent=2) if args.json else format_statistics(stats))
    if stats.get("skip_report"):
        print(stats["skip_report"])
    if png:
        print(f"wrote {stats['png']}")
    return 0


def build(args: argparse.Namespace) -> int:
    from vrsjax.data.formats import open_dataset
    from vrsjax.data.records import build_records

    kwargs = {"skip_bad_samples": args.skip_bad_samples}
    if args.meta_file:
        kwargs["meta_file"] = args.meta_file
    dataset = open_dataset(args.format, args.root, args.split, **kwargs)
    out = build_records(dataset, args.out, overwrite=args.overwrite, skip_bad_samples=args.skip_bad_samples)
    print(f"wrote {len(dataset)} expressions of {dataset.name}/{dataset.split} as ArrayRecord files under {out}")
    if dataset.skipped.total:
        print(dataset.skipped.report())
    return 0


def subset(args: argparse.Namespace) -> int:
    from vrsjax.data.subset import write_subset

    out, written, available = write_subset(args.meta, args.out, args.size, args.seed)
    if written < args.size:
        print(f"wrote all {written} expressions to {out}: --size {args.size} asked for more than {args.meta} holds")
    else:
        print(f"wrote {written} of {available} expressions (stratified) to {out}")
    return 0


def cot(args: argparse.Namespace) -> int:
    from vrsjax.teacher.commands import run_cot

    run_cot(args)
    return 0


def difficulty(args: argparse.Namespace) -> int:
    from vrsjax.teacher.commands import run_difficulty

    run_difficulty(args)
    return 0
