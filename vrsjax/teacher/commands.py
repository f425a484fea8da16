"""What `vrsjax data cot` and `vrsjax data difficulty` run: their arguments (`add_cot_arguments`,
`add_difficulty_arguments`, called by vrsjax/cli.py) and the runs (`run_cot`, `run_difficulty`, called by
vrsjax/data/commands.py). Each run opens the dataset, selects and plans the samples, asks the teacher through
`TeacherClient`, writes the output, a `<out>.report.json` with the counts and token usage, and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path

from vrsjax.errors import UserError
from vrsjax.teacher.client import ClientConfig, TeacherClient
from vrsjax.teacher.jobs import RunCounts, ask_all, select_samples


def _fit(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x480, got {value!r}") from error
    return width, height


def _common(parser: argparse.ArgumentParser, default_tokens: int) -> None:
    parser.add_argument("--dataset", required=True, help="dataset root (ReVOS layout, or any `data inspect` format)")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--endpoint", required=True, help="OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="model name sent to the endpoint")
    parser.add_argument("--format", default=None, help="dataset format (default: detect)")
    parser.add_argument("--split", default=None, help="dataset split (default: the format's training split)")
    parser.add_argument("--size", type=int, default=None, help="Veason-R1 stratified subset of this many samples")
    parser.add_argument("--max-per-video", type=int, default=10, help="first N expressions per video (Veason: 10)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames shown per sample")
    parser.add_argument("--seed", type=int, default=0, help="sample selection, keyframes, templates, request seeds")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts per request")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--max-attempts", type=int, default=3, help="asks per sample before dropping it")
    parser.add_argument("--max-tokens", type=int, default=default_tokens, help="max_tokens per reply")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: endpoint's)")
    parser.add_argument("--cache-dir", default=None, help="request cache (default: <out>.cache)")
    parser.add_argument("--frame-fit", type=_fit, default=(640, 480), help="shrink frames to fit WxH (Veason: 640x480)")
    parser.add_argument("--price-input", type=float, default=0.0, help="price per 1M prompt tokens, for the summary")
    parser.add_argument("--price-output", type=float, default=0.0, help="price per 1M completion tokens")


def add_cot_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, default_tokens=1024)
    parser.add_argument("--min-iou", type=float, default=0.0, help="also require the teacher's boxes to match GT")
    parser.add_argument("--name", default="vrsjax_cot", help="dataset name in dataset_info.json")


def add_difficulty_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, default_tokens=512)
    parser.add_argument("--easy-threshold", type=float, default=4.0, help="D below this is easy")
    parser.add_argument("--hard-threshold", type=float, default=7.0, help="D at or above this is hard")


def _config(args: argparse.Namespace, out: Path) -> ClientConfig:
    return ClientConfig(
        endpoint=args.endpoint,
        model=args.model,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        timeout=args.timeout,
        cache_dir=args.cache_dir or f"{out}.cache",
        price_input_per_m=args.price_input,
        price_output_per_m=args.price_output,
    )


def _samples(args: argparse.Namespace):
    from vrsjax.data.formats import open_dataset

    dataset = open_dataset(args.format, args.dataset, args.split, skip_bad_samples=True)
    samples, skipped = select_samples(dataset, args.size, args.seed, args.max_per_video)
    if dataset.skipped.total:
        skipped["unreadable"] += dataset.skipped.total
    return samples, skipped


async def _ask(args, config, jobs, build, validate, counts, desc):
    params = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    async with TeacherClient(config, seed=args.seed) as client:
        results = await ask_all(client, jobs, build, validate, params, args.max_attempts, counts, desc)
    return results, client.usage


def _check_kept(args, out: Path, records: list, counts: RunCounts, usage, config: ClientConfig) -> None:
    """A run that kept nothing writes its report and fails (UserError) without writing or registering `out`:
    an empty dataset file would look like a finished run."""
    if records:
        return
    _finish(out, counts, usage, config, {"output": None})
    why = (
        ", ".join(
            ([f"{counts.failed} of {counts.selected} requests failed"] if counts.failed else [])
            + ([f"{counts.dropped_invalid} samples dropped after invalid replies"] if counts.dropped_invalid else [])
        )
        or "no sample was selected from --dataset"
    )
    first = f" (first failure: {counts.first_failure})" if counts.first_failure else ""
    raise UserError(
        f"--endpoint {args.endpoint}: no sample kept: {why}{first}; {out} was not written; check the endpoint, "
        f"--model and --api-key-env (counts in {out.name}.report.json)"
    )


def _finish(out: Path, counts: RunCounts, usage, config: ClientConfig, extra: dict | None = None) -> dict:
    report = {"counts": counts.as_dict(), "usage": {**vars(usage), "cost": usage.cost(config)}, **(extra or {})}
    report_path = out.with_name(out.name + ".report.json")
    report_path.write_text(json.dumps(report, indent=2))
    print(counts.report())
    print(usage.summary(config))
    return report


def run_cot(args: argparse.Namespace) -> dict:
    """Write the CoT ShareGPT file; returns the report."""
    from vrsjax.teacher import cot

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = _config(args, out)
    samples, skipped = _samples(args)
    counts = RunCounts(skipped=Counter(skipped))
    jobs = []
    for sample in samples:
        job = cot.plan_job(sample, args.num_frames, args.seed)
        if job is None:
            counts.skipped["empty_masks"] += 1
        else:
            jobs.append(job)

    def validate(job, text):
        return cot.conversation(job, cot.validate_reply(job, text, args.min_iou), out.parent)

    results, usage = asyncio.run(
        _ask(args, config, jobs, lambda j: cot.build_messages(j, args.frame_fit), validate, counts, "cot")
    )
    records = [r for r in results if r is not None]
    _check_kept(args, out, records, counts, usage, config)
    out.write_text(json.dumps(records, indent=2, ensure_ascii=False))
    info = cot.dataset_info(out, args.name)
    print(f"wrote {len(records)} conversations to {out} (registered as {args.name!r} in {info})")
    return _finish(out, counts, usage, config, {"output": str(out)})


def run_difficulty(args: argparse.Namespace) -> dict:
    """Write the difficulty JSON Lines file; returns the report."""
    from vrsjax.rewards.videoseg import LengthBudget
    from vrsjax.teacher import difficulty

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = _config(args, out)
    budget = LengthBudget(easy_threshold=args.easy_threshold, hard_threshold=args.hard_threshold)
    samples, skipped = _samples(args)
    counts = RunCounts(skipped=Counter(skipped))
    jobs = [difficulty.plan_job(s, args.num_frames) for s in samples]
    results, usage = asyncio.run(
        _ask(
            args,
            config,
            jobs,
            lambda j: difficulty.build_messages(j, args.frame_fit),
            lambda j, text: difficulty.validate_reply(j, text, budget),
            counts,
            "difficulty",
        )
    )
    records = [r for r in results if r is not None]
    _check_kept(args, out, records, counts, usage, config)
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    levels = difficulty.level_counts(records)
    print(f"wrote {len(records)} difficulty records to {out}: {levels}")
    thresholds = {"easy_threshold": budget.easy_threshold, "hard_threshold": budget.hard_threshold}
    return _finish(out, counts, usage, config, {"output": str(out), "levels": levels, "thresholds": thresholds})
