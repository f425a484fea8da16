"""What the teacher data tools share: which samples are asked about, and the ask-validate-re-ask loop over them.

Selection: expressions with a target (type 0/1, or untyped formats) and ground-truth masks, at most
`max_per_video` per video in reader order (Veason-R1's `seed_cot_generation.py` keeps the first 10 of each video),
then, with `size`, Veason-R1's stratified subset (`vrsjax.data.subset`). Each skipped sample is counted by reason.
Asking: every sample is one job; a job builds its messages in a worker thread (frame decoding, drawing), sends them,
and validates the reply. An invalid reply is asked again with the next seed (the seed is part of the request, so
the re-ask is a new request and a resumed run replays the same sequence from the cache) up to `max_attempts`
times, then the sample is dropped and counted. A request that fails for good (TeacherError) is counted and the run
goes on: run it again to retry those, the rest comes from the cache.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vrsjax.data.samples import ExpressionDataset, ExpressionSample
from vrsjax.data.subset import stratified_subset
from vrsjax.progress import progress_bar
from vrsjax.teacher.client import TeacherClient, TeacherError


class InvalidReply(ValueError):
    """The teacher's reply does not have the required shape; the message says what is wrong."""


@dataclass
class RunCounts:
    """What happened to each selected sample."""

    selected: int = 0
    kept: int = 0
    dropped_invalid: int = 0
    failed: int = 0
    reasks: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> samples not selected
    invalid_reasons: Counter = field(default_factory=Counter)  # reason -> invalid replies (re-asked or dropped)
    first_failure: str = ""  # the first failed request's error, for a run in which nothing was kept

    def as_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "kept": self.kept,
            "dropped_invalid": self.dropped_invalid,
            "failed": self.failed,
            "reasks": self.reasks,
            "skipped": dict(self.skipped),
            "invalid_reasons": dict(self.invalid_reasons),
        }

    def report(self) -> str:
        text = (
            f"{self.selected} samples asked: {self.kept} kept, {self.dropped_invalid} dropped after invalid replies "
            f"({self.reasks} re-asks), {self.failed} failed requests"
        )
        if self.skipped:
            text += "; not selected: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        if self.invalid_reasons:
            text += "; invalid replies: " + ", ".join(f"{n} {r}" for r, n in self.invalid_reasons.most_common())
        return text


def select_samples(
    dataset: ExpressionDataset, size: int | None = None, seed: int = 0, max_per_video: int | None = 10
) -> tuple[list[ExpressionSample], Counter]:
    """-> (the samples to ask about, in dataset order; Counter of skip reasons)."""
    skipped: Counter = Counter()
    per_video: Counter = Counter()
    candidates = []
    for sample in dataset:
        if sample.type_id == 2 or not sample.obj_ids:
            skipped["no_target"] += 1
        elif not sample.has_masks:
            skipped["no_masks"] += 1
        elif max_per_video is not None and per_video[sample.video] >= max_per_video:
            skipped["over_max_per_video"] += 1
        else:
            per_video[sample.video] += 1
            candidates.append(sample)
    if size is None or size >= len(candidates):
        return candidates, skipped
    videos: dict[str, dict] = {}
    for s in candidates:
        entry = {"type_id": s.type_id if s.type_id is not None else 0, "obj_id": list(s.obj_ids)}
        videos.setdefault(s.video, {"expressions": {}})["expressions"][s.exp_id] = entry
    chosen = set(stratified_subset(videos, size, seed))
    skipped["not_in_subset"] += len(candidates) - len(chosen)
    return [s for s in candidates if (s.video, s.exp_id) in chosen], skipped


async def _job(
    client: TeacherClient,
    job: Any,
    build: Callable[[Any], list[dict]],
    validate: Callable[[Any, str], dict],
    params: dict,
    max_attempts: int,
    counts: RunCounts,
) -> dict | None:
    messages = await asyncio.to_thread(build, job)
    for attempt in range(max_attempts):
        try:
            reply = await client.chat(messages, **{**params, "seed": params.get("seed", 0) + attempt})
        except TeacherError as error:
            counts.failed += 1
            counts.first_failure = counts.first_failure or str(error)
            return None
        try:
            return validate(job, reply.text)
        except InvalidReply as error:
            counts.invalid_reasons[str(error).split(":")[0]] += 1
            if attempt + 1 < max_attempts:
                counts.reasks += 1
    counts.dropped_invalid += 1
    return None


async def ask_all(
    client: TeacherClient,
    jobs: Sequence[Any],
    build: Callable[[Any], list[dict]],
    validate: Callable[[Any, str], dict],
    params: dict,
    max_attempts: int,
    counts: RunCounts,
    desc: str,
) -> list[dict | None]:
    """One validated record (or None) per job, in job order, with a progress bar; at most `concurrency` jobs
    hold their frames in memory at once."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    gate = asyncio.Semaphore(client.config.concurrency)
    bar = progress_bar(total=len(jobs), desc=desc, unit="sample")

    async def one(job: Any) -> dict | None:
        async with gate:
            result = await _job(client, job, build, validate, params, max_attempts, counts)
        bar.update(1)
        bar.set_postfix(dropped=counts.dropped_invalid, failed=counts.failed, refresh=False)
        return result

    try:
        results = await asyncio.gather(*(one(job) for job in jobs))
    finally:
        bar.close()
    counts.selected += len(jobs)
    counts.kept += sum(r is not None for r in results)
    return list(results)
