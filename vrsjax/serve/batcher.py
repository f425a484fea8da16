"""Dynamic batching for `vrsjax serve`: HTTP handler threads submit requests to one queue; a single worker thread
takes the first waiting request, keeps collecting for `window_s` (a few milliseconds) or until `max_batch` requests
are in hand, and answers them all with one `Engine.run` call. The model runs on one thread only, and concurrent
clients share generate calls instead of queueing behind each other one by one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

logger = logging.getLogger(__name__)


class Batcher:
    """`submit(item) -> Future`; `run_batch(items) -> results` (same length) runs on the worker thread."""

    def __init__(self, run_batch: Callable[[Sequence], list], max_batch: int = 8, window_s: float = 0.005):
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"max_batch must be >= 1 and window_s >= 0, got {max_batch} and {window_s}")
        self.run_batch, self.max_batch, self.window_s = run_batch, max_batch, window_s
        self._queue: queue.Queue = queue.Queue()
        self._stopped = threading.Event()
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._loop, name="vrsjax-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, item) -> Future:
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _collect(self, first) -> list:
        batch, deadline = [first], time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while not self._stopped.is_set():
            first = self._queue.get()
            if first is None:
                break
            batch = self._collect(first)
            self.batch_sizes.append(len(batch))
            try:
                results = self.run_batch([item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiting client gets the error, the loop goes on
                logger.exception("batch failed")
                results = [error] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
