"""Asynchronous reward scoring for the GRPO trainer: submit a batch of response groups, keep working, collect the
scores in submission order.

A `RewardGroup` holds the n responses to one prompt and what their reward needs (GT fields; for Veason-R1 also the
sampled frames SAM2 segments). `RewardScorer.submit(groups)` puts the groups on a bounded queue (submit blocks while it
is full) and returns a `PendingScores` at once; `result()` gives float32 scores in order. A group is scored in two
passes of the registered reward around SAM2: the first records the (keyframe, boxes) each response asks SAM2 to
propagate, SAM2 runs all of the group's jobs on frames encoded once, the second scores with those masks. SAM2 runs in
this process (`mode="in_process"`, the default: one scoring thread sharing the accelerator with JAX) or in `workers`
processes on loopback (`mode="server"`, see `vrsjax.services.server`) with request timeouts, retries and restarts of
crashed workers. A SAM2 job that still fails gives that response's consistency term `consistency_fallback` (0.0 by
default: what the original scores when its SAM2 call fails), counted and logged; training never stops for SAM2.
`counters()` says what happened. torch is imported only when SAM2 is built in this process.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vrsjax.rewards import registry
from vrsjax.services import wire
from vrsjax.services.server import (
    DEFAULT_MAX_REQUEST_BYTES,
    Counters,
    Worker,
    WorkerError,
    WorkerRejected,
    WorkerTimeout,
    run_jobs,
    unpack_masks,
)

logger = logging.getLogger(__name__)

MODES = ("in_process", "server")
JobRunner = Callable[[Any, list[dict[str, Any]]], list[np.ndarray | str]]
"""(frames uint8[T, H, W, 3], jobs [{keyframe, boxes}]) -> per job a bool[T, H, W] mask or an error string."""


@dataclass(frozen=True)
class RewardGroup:
    """The n responses to one prompt and the inputs of their reward.

    responses: the decoded responses; fields: keyword arguments of the reward shared by the group (Veason-R1:
    gt_masks bool[T, H, W], gt_boxes, frame_ids); frames: uint8[T, H, W, 3] (numpy, torch or JAX), the sampled frames
    SAM2 segments, or None; response_fields: per-response keyword arguments (e.g. VideoSeg-R1's reasoning_tokens).
    """

    responses: Sequence[str]
    fields: Mapping[str, Any] = field(default_factory=dict)
    frames: Any = None
    response_fields: Sequence[Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.responses, str) or not all(isinstance(r, str) for r in self.responses):
            raise TypeError("RewardGroup.responses must be a sequence of strings")
        if self.response_fields is not None and len(self.response_fields) != len(self.responses):
            raise ValueError(
                f"RewardGroup has {len(self.responses)} responses but {len(self.response_fields)} response_fields"
            )

    def kwargs(self, index: int) -> dict[str, Any]:
        """The reward's keyword arguments for response `index`."""
        extra = {} if self.response_fields is None else self.response_fields[index]
        return {**self.fields, **extra}


@dataclass(frozen=True)
class SAM2Options:
    """How to build the SAM2 service (keyword arguments of `vrsjax.services.sam2.SAM2Service`)."""

    config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    checkpoint: str | None = None
    device: str = "auto"
    image_size: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ScoreResult:
    """scores float32[N] and sam2_failed bool[N] (the consistency term took the fallback), N = all responses of the
    batch in submission order; group_sizes: responses per group."""

    scores: np.ndarray
    sam2_failed: np.ndarray
    group_sizes: tuple[int, ...]


def takes_propagate(reward: Callable[..., float]) -> bool:
    """Whether the reward asks SAM2 through a `propagate` keyword (the Veason-R1 family)."""
    return "propagate" in inspect.signature(reward).parameters


def consistency_weight(reward: Callable[..., float]) -> float:
    """The weight of the SAM2 term: the bound `consistency_weight`, else its default, else 1."""
    if isinstance(reward, functools.partial) and "consistency_weight" in reward.keywords:
        return float(reward.keywords["consistency_weight"])
    parameter = inspect.signature(reward).parameters.get("consistency_weight")
    return 1.0 if parameter is None or parameter.default is inspect.Parameter.empty else float(parameter.default)


def propagation_jobs(group: RewardGroup, reward: Callable[..., float]) -> list[dict[str, Any] | None]:
    """Per response, the SAM2 job {keyframe, boxes float64[K, 4]} its reward asks for, or None when it asks none."""
    jobs: list[dict[str, Any] | None] = []
    for index, response in enumerate(group.responses):
        asked: list[dict[str, Any]] = []

        def record(position: int, boxes: np.ndarray, asked: list[dict[str, Any]] = asked) -> None:
            asked.append({"keyframe": int(position), "boxes": np.asarray(boxes, dtype=np.float64)})
            return None  # no masks yet: this pass only listens

        reward(response, **group.kwargs(index), propagate=record)
        jobs.append(asked[0] if asked else None)
    return jobs


def score_group(
    group: RewardGroup,
    reward: Callable[..., float],
    run: JobRunner | None,
    *,
    fallback: float = 0.0,
    counters: Counters | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64[n], sam2_failed bool[n]) of one group; `run` executes SAM2 jobs (None: SAM2 unavailable).

    A failed job scores the consistency term 0 inside the reward (as the original does), then `fallback` times the
    term's weight is added.
    """
    counters = counters or Counters()
    count = len(group.responses)
    if not takes_propagate(reward):
        scores = [float(reward(response, **group.kwargs(i))) for i, response in enumerate(group.responses)]
        return np.asarray(scores, dtype=np.float64), np.zeros(count, dtype=bool)
    results = _run_group_jobs(group, propagation_jobs(group, reward), run)
    failed = np.array([isinstance(results.get(i), str) for i in range(count)], dtype=bool)
    if failed.any():
        counters.add("sam2_fallbacks", int(failed.sum()))
        first = next(results[i] for i in range(count) if failed[i])
        logger.warning(
            "SAM2 failed for %d of %d responses of a group; their consistency term is the fallback %s: %s",
            failed.sum(),
            count,
            fallback,
            first,
        )
    weight = consistency_weight(reward)
    scores = np.zeros(count, dtype=np.float64)
    for i, response in enumerate(group.responses):
        masks = None if failed[i] else results.get(i)
        scores[i] = float(reward(response, **group.kwargs(i), propagate=lambda position, boxes, m=masks: m))
        if failed[i]:
            scores[i] += weight * fallback
    return scores, failed


def _run_group_jobs(
    group: RewardGroup, jobs: list[dict[str, Any] | None], run: JobRunner | None
) -> dict[int, np.ndarray | str]:
    wanted = [i for i, job in enumerate(jobs) if job is not None]
    if not wanted:
        return {}
    if group.frames is None:
        outcome: list[np.ndarray | str] = ["the group has no frames for SAM2 (frames=None)"] * len(wanted)
    elif run is None:
        outcome = ["SAM2 is not configured for this scorer (sam2=None)"] * len(wanted)
    else:
        outcome = run(group.frames, [jobs[i] for i in wanted])
    return dict(zip(wanted, outcome, strict=True))


class PendingScores:
    """The scores of one submitted batch, in submission order, once they are ready."""

    def __init__(self, futures: list[concurrent.futures.Future], group_sizes: list[int]) -> None:
        self._futures = futures
        self.group_sizes = tuple(group_sizes)

    def done(self) -> bool:
        return all(future.done() for future in self._futures)

    def result(self, timeout: float | None = None) -> ScoreResult:
        """Waits up to `timeout` seconds (None: no limit); TimeoutError if not all groups are scored by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts = []
        for future in self._futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                parts.append(future.result(timeout=left))
            except concurrent.futures.TimeoutError:
                done = sum(f.done() for f in self._futures)
                raise TimeoutError(f"rewards not ready after {timeout}s: {done}/{len(self._futures)} groups") from None
            except concurrent.futures.CancelledError:
                raise RuntimeError("the reward scorer was closed before this batch was scored") from None
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        failed = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=bool)
        return ScoreResult(scores.astype(np.float32), failed, self.group_sizes)


class RewardScorer:
    """Scores response groups with a registered reward on background threads, SAM2 in process or in workers.

    reward / reward_kwargs: a name in `vrsjax.rewards.registry` and its overrides (weights, ablations); sam2: how to
    build SAM2 (None: no SAM2, every consistency term takes the fallback); mode: "in_process" or "server";
    workers: worker processes in server mode; max_pending: bound of the group queue; retries: extra attempts per
    SAM2 job and per worker request; consistency_fallback: the consistency term of a response whose SAM2 job failed;
    request_timeout_s, max_request_bytes, start_timeout_s, worker_threads: worker requests, startup and torch threads;
    submit_timeout_s: how long `submit` waits for room in a full queue before TimeoutError.
    """

    def __init__(
        self,
        reward: str = "video_match_keyframe_sft_sam_mod",
        *,
        reward_kwargs: Mapping[str, Any] | None = None,
        sam2: SAM2Options | None = SAM2Options(),
        mode: str = "in_process",
        workers: int = 1,
        max_pending: int = 64,
        retries: int = 2,
        consistency_fallback: float = 0.0,
        request_timeout_s: float = 600.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        start_timeout_s: float = 300.0,
        worker_threads: int | None = None,
        submit_timeout_s: float = 600.0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"RewardScorer mode must be one of {MODES}, got {mode!r}")
        if workers < 1 or max_pending < 1 or retries < 0:
            raise ValueError(
                f"need workers >= 1, max_pending >= 1, retries >= 0; got {workers}, {max_pending}, {retries}"
            )
        self.reward_name = reward
        self.mode = mode
        self.retries = retries
        self.consistency_fallback = float(consistency_fallback)
        self.request_timeout_s = request_timeout_s
        self.max_request_bytes = max_request_bytes
        self.submit_timeout_s = submit_timeout_s
        self._reward = registry.lookup(reward, **(reward_kwargs or {}))
        self._counters = Counters()
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._closed = False
        self._workers: list[Worker] = []
        needs_sam2 = sam2 is not None and takes_propagate(self._reward) and consistency_weight(self._reward) != 0
        runners: list[JobRunner | None] = [None] * (workers if mode == "server" else 1)
        if needs_sam2 and mode == "in_process":
            from vrsjax.services.sam2 import SAM2Service

            runners = [functools.partial(self._run_local, SAM2Service(**asdict(sam2)))]
        elif needs_sam2:
            self._workers = [
                Worker(
                    asdict(sam2),
                    max_request_bytes=max_request_bytes,
                    start_timeout_s=start_timeout_s,
                    threads=worker_threads,
                )
                for _ in range(workers)
            ]
            self._finalizer = weakref.finalize(self, _stop_workers, list(self._workers))
            _start_workers(self._workers)
            runners = [functools.partial(self._run_remote, worker) for worker in self._workers]
        self._threads = [
            threading.Thread(target=self._consume, args=(runner,), name=f"vrsjax-reward-{k}", daemon=True)
            for k, runner in enumerate(runners)
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, groups: Sequence[RewardGroup]) -> PendingScores:
        """Queues the groups and returns at once; blocks only while the queue is full (TimeoutError after
        submit_timeout_s)."""
        if self._closed:
            raise RuntimeError("this RewardScorer is closed")
        futures = []
        for index, group in enumerate(groups):
            if not isinstance(group, RewardGroup):
                raise TypeError(f"group {index} is a {type(group).__name__}, expected a RewardGroup")
            future: concurrent.futures.Future = concurrent.futures.Future()
            try:
                self._queue.put((index, group, future), timeout=self.submit_timeout_s)
            except queue.Full:
                raise TimeoutError(
                    f"the reward queue stayed full ({self._queue.maxsize} groups) for {self.submit_timeout_s}s: "
                    "scoring is not keeping up; raise max_pending or add workers"
                ) from None
            self._counters.high_water("queue_high_water", self._queue.qsize())
            futures.append(future)
        self._counters.add("groups_submitted", len(futures))
        return PendingScores(futures, [len(group.responses) for group in groups])

    def score(self, groups: Sequence[RewardGroup], timeout: float | None = None) -> ScoreResult:
        """submit(groups).result(timeout)."""
        return self.submit(groups).result(timeout)

    def counters(self) -> dict[str, int]:
        """Event counts so far (groups, SAM2 jobs, errors, retries, fallbacks, requests, restarts, queue high water)."""
        return {**self._counters.snapshot(), "queue_size": self._queue.qsize()}

    def worker_pids(self) -> list[int | None]:
        """The process ids of the server-mode workers (None while one is down)."""
        return [worker.pid for worker in self._workers]

    def worker_ports(self) -> list[int | None]:
        """The 127.0.0.1 ports of the server-mode workers (None while one is down)."""
        return [worker.port for worker in self._workers]

    def close(self) -> None:
        """Cancels groups still queued, lets the running ones finish, stops the threads and the workers."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[2].cancel()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self.request_timeout_s * (self.retries + 1))
        _stop_workers(self._workers)

    def _consume(self, run: JobRunner | None) -> None:
        while (item := self._queue.get()) is not None:
            index, group, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                scores, failed = score_group(
                    group, self._reward, run, fallback=self.consistency_fallback, counters=self._counters
                )
            except Exception as error:  # a bad group (wrong fields) is the caller's bug: report it with its index
                self._counters.add("groups_failed")
                failure = RuntimeError(f"reward {self.reward_name!r} failed on group {index} of its batch: {error!r}")
                failure.__cause__ = error
                future.set_exception(failure)
                continue
            self._counters.add("groups_scored")
            self._counters.add("responses_scored", len(scores))
            future.set_result((scores, failed))

    def _run_local(self, service: Any, frames: Any, jobs: list[dict[str, Any]]) -> list[np.ndarray | str]:
        return run_jobs(service, frames, jobs, self.retries, self._counters)

    def _run_remote(self, worker: Worker, frames: Any, jobs: list[dict[str, Any]]) -> list[np.ndarray | str]:
        """Sends the jobs to `worker`, restarting it and resending up to `retries` times; error strings if all fail."""
        frames = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
        body = wire.encode({"frames": frames, "jobs": jobs, "retries": self.retries})
        self._counters.add("requests")
        if len(body) > self.max_request_bytes:
            self._counters.add("requests_too_large")
            message = f"a request of {len(body)} bytes exceeds max_request_bytes={self.max_request_bytes}"
            return [message] * len(jobs)
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._counters.add("request_retries")
            try:
                if not worker.alive():
                    if self._closed:
                        break
                    self._counters.add("worker_restarts")
                    logger.warning("restarting SAM2 worker (was pid %s)", worker.last_pid)
                    worker.start()
                reply = wire.decode(worker.post("/propagate", body, self.request_timeout_s))
                self._counters.merge(reply["counters"])
                return unpack_masks(reply)
            except WorkerRejected as failure:
                error = failure
                self._counters.add("requests_rejected")
                break
            except (WorkerError, wire.WireError, KeyError, TypeError, ValueError) as failure:
                error = failure
                self._counters.add("request_timeouts" if isinstance(failure, WorkerTimeout) else "request_errors")
                logger.warning(
                    "SAM2 worker request failed (attempt %d of %d): %s", attempt + 1, self.retries + 1, error
                )
                worker.stop()  # dead, hung or confused: the next attempt gets a fresh process
        return [f"SAM2 worker request failed: {error}"] * len(jobs)


def _start_workers(workers: list[Worker]) -> None:
    """Starts the workers concurrently; if one fails, stops them all and raises its error."""
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        outcomes = [pool.submit(worker.start) for worker in workers]
    errors = [outcome.exception() for outcome in outcomes if outcome.exception() is not None]
    if errors:
        _stop_workers(workers)
        raise errors[0]


def _stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()
