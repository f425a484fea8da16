"""Out-of-process SAM2: worker processes serving propagation over HTTP on loopback, and the client that runs them.

A worker (`python -m vrsjax.services.server`) builds one `SAM2Service`, binds an HTTP server to 127.0.0.1 on a free
port, prints `VRSJAX_SAM2_WORKER_READY <port>` and answers `POST /propagate` (a `wire` message: frames uint8[T, H, W,
3] plus jobs `{keyframe, boxes, points, labels}`; the reply holds one bit-packed bool[T, H, W] union mask or one error
per job), `GET /health` and `GET /stats` (JSON). The frames of one request are encoded once and shared by its jobs.
Each connection has its own thread and SAM2 runs one request at a time, so `/health` answers (with `busy`) even while
a request runs or a client holds an idle connection open. Requests over `max_request_bytes` get 413 unread, a
missing Content-Length 411, a malformed one 400; a stalled client times out; a failing job is retried in the worker
and then reported, never fatal. A worker exits when its parent closes its stdin (so it dies with the trainer). The
client side, `Worker`, starts a worker, posts with a timeout and stops or restarts it; `RewardScorer` in
`vrsjax.rewards.scorer` adds the queue, the retries and the fallback. Nothing here imports torch until a worker runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from vrsjax.services import wire

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only: the workers take no credentials
READY = "VRSJAX_SAM2_WORKER_READY"
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20


class Counters:
    """Thread-safe named event counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def high_water(self, name: str, value: int) -> None:
        with self._lock:
            self._counts[name] = max(self._counts.get(name, 0), value)

    def merge(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.add(name, int(n))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# ---------------------------------------------------------------- jobs (shared by the worker and in-process scoring)


def run_jobs(
    service: Any, frames: Any, jobs: Sequence[dict[str, Any]], retries: int, counters: Counters
) -> list[np.ndarray | str]:
    """Union masks bool[T, H, W] for each job {keyframe, boxes, points, labels} on the same frames, features computed
    once (`service.prepare`); a job failing retries + 1 times gives its last error as a string instead."""
    counters.add("sam2_jobs", len(jobs))
    video, error = None, "no attempt"
    for attempt in range(retries + 1):
        try:
            video = service.prepare(frames)
            break
        except Exception as failure:  # a bad frame array or a device error: every job of the request fails alike
            error = _failure(failure, "encoding the frames", attempt, retries, counters)
    if video is None:
        return [error] * len(jobs)
    return [_run_job(service, video, job, retries, counters) for job in jobs]


def _run_job(service: Any, video: Any, job: dict[str, Any], retries: int, counters: Counters) -> np.ndarray | str:
    error = "no attempt"
    for attempt in range(retries + 1):
        try:
            prompts = {name: job.get(name) for name in ("boxes", "points", "labels")}
            return service.propagate(video, job["keyframe"], **prompts)
        except Exception as failure:  # SAM2 errors (OOM, bad prompt) cost this job, not the batch
            error = _failure(failure, f"job at keyframe {job.get('keyframe')}", attempt, retries, counters)
    return error


def _failure(failure: Exception, what: str, attempt: int, retries: int, counters: Counters) -> str:
    counters.add("sam2_errors")
    if attempt < retries:
        counters.add("sam2_retries")
    logger.warning("SAM2 failed on %s (attempt %d of %d): %r", what, attempt + 1, retries + 1, failure)
    return f"{type(failure).__name__}: {failure}"


def pack_masks(results: Sequence[np.ndarray | str]) -> dict[str, Any]:
    """Job results -> the reply tree: bit-packed masks (None for errors), errors (None for masks), mask shapes."""
    return {
        "masks": [None if isinstance(r, str) else np.packbits(r.astype(bool), axis=None) for r in results],
        "shapes": [None if isinstance(r, str) else list(r.shape) for r in results],
        "errors": [r if isinstance(r, str) else None for r in results],
    }


def unpack_masks(reply: dict[str, Any]) -> list[np.ndarray | str]:
    """The reply tree of `pack_masks` -> bool[T, H, W] masks or error strings, in job order."""
    out: list[np.ndarray | str] = []
    for packed, shape, error in zip(reply["masks"], reply["shapes"], reply["errors"], strict=True):
        if error is not None:
            out.append(str(error))
        else:
            count = int(np.prod(shape))
            out.append(np.unpackbits(packed, count=count).astype(bool).reshape(shape))
    return out


# ---------------------------------------------------------------- worker side


class _Handler(BaseHTTPRequestHandler):
    server: _WorkerServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.timeout = self.server.read_timeout_s  # a client that stops sending cannot hold the worker
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self.path == "/health":
            health = {"ok": True, "pid": os.getpid(), "host": HOST, "busy": self.server.sam2_lock.locked()}
            self._reply(200, json.dumps(health).encode(), "application/json")
        elif self.path == "/stats":
            self._reply(200, json.dumps(self.server.counters.snapshot()).encode(), "application/json")
        else:
            self._reply(404, b"unknown path; use POST /propagate, GET /health or GET /stats")

    def do_POST(self) -> None:
        counters = self.server.counters
        if self.path != "/propagate":
            self._reply(404, b"unknown path; use POST /propagate", close=True)
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, b"Content-Length required", close=True)
            return
        if not length.strip().isdigit():
            counters.add("requests_malformed")
            self._reply(400, f"Content-Length must be a number of bytes, got {length[:40]!r}".encode(), close=True)
            return
        size = int(length)
        if size > self.server.max_request_bytes:
            counters.add("requests_too_large")
            message = f"request of {size} bytes exceeds the limit of {self.server.max_request_bytes}"
            self._reply(413, message.encode(), close=True)
            return
        try:
            request = wire.decode(self.rfile.read(size))
            frames, jobs, retries = request["frames"], list(request["jobs"]), int(request.get("retries", 0))
        except (wire.WireError, KeyError, TypeError, ValueError) as error:
            counters.add("requests_malformed")
            self._reply(400, f"malformed request: {error}".encode(), close=True)
            return
        counters.add("requests")
        request_counters = Counters()  # sent back, so the client's totals include what happened here
        with self.server.sam2_lock:  # one SAM2 call at a time: the model is not thread-safe, and CPU-bound anyway
            results = run_jobs(self.server.service, frames, jobs, retries, request_counters)
        counters.merge(request_counters.snapshot())
        reply = {**pack_masks(results), "counters": request_counters.snapshot()}
        self._reply(200, wire.encode(reply), "application/octet-stream")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain", close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class _WorkerServer(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a connection open never keeps the worker from exiting

    def __init__(self, service: Any, max_request_bytes: int, read_timeout_s: float) -> None:
        super().__init__((HOST, 0), _Handler)
        self.service = service
        self.sam2_lock = threading.Lock()
        self.max_request_bytes = max_request_bytes
        self.read_timeout_s = read_timeout_s
        self.counters = Counters()


def serve(sam2: dict[str, Any], max_request_bytes: int, read_timeout_s: float, threads: int | None) -> None:
    """Worker main: build SAM2, bind 127.0.0.1:<free port>, announce it on stdout, serve until stdin closes."""
    from vrsjax.services.sam2 import SAM2Service

    if threads:
        import torch

        torch.set_num_threads(threads)
    server = _WorkerServer(SAM2Service(**sam2), max_request_bytes, read_timeout_s)
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    print(f"{READY} {server.server_address[1]}", flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads stdout from now on: a full pipe would block
    server.serve_forever()


def _exit_when_orphaned() -> None:
    """The parent holds our stdin open; EOF means it exited or closed us: leave at once, mid-request or not."""
    while sys.stdin.buffer.read(1 << 16):
        pass
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vrsjax.services.server", description="one SAM2 worker process")
    parser.add_argument("--sam2", default="{}", help="JSON keyword arguments of SAM2Service")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--read-timeout-s", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serve(json.loads(args.sam2), args.max_request_bytes, args.read_timeout_s, args.threads)


# ---------------------------------------------------------------- client side


class WorkerError(RuntimeError):
    """The worker could not answer: it died, refused the connection, or replied with a server error."""


class WorkerTimeout(WorkerError):
    """No reply within the request timeout."""


class WorkerRejected(WorkerError):
    """The worker refused the request (4xx): sending it again would not help."""


class Worker:
    """One worker process and how to reach it. Not thread-safe: one caller at a time.

    sam2: SAM2Service keyword arguments (JSON-able); threads: torch CPU threads in the worker.
    """

    def __init__(
        self,
        sam2: dict[str, Any],
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        read_timeout_s: float = 60.0,
        start_timeout_s: float = 300.0,
        threads: int | None = None,
    ) -> None:
        self.sam2 = dict(sam2)
        self.max_request_bytes = max_request_bytes
        self.read_timeout_s = read_timeout_s
        self.start_timeout_s = start_timeout_s
        self.threads = threads
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.last_pid: int | None = None  # the newest process's pid, kept after it died or was stopped (for logs)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawns the process and waits for its READY line; WorkerError (process stopped) if it fails or is late."""
        self.stop()
        command = [sys.executable, "-m", "vrsjax.services.server", "--sam2", json.dumps(self.sam2)]
        command += ["--max-request-bytes", str(self.max_request_bytes), "--read-timeout-s", str(self.read_timeout_s)]
        if self.threads:
            command += ["--threads", str(self.threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.last_pid = self.process.pid
        try:
            self.port = self._await_ready()
        except WorkerError:
            self.stop()
            raise

    def _await_ready(self) -> int:
        deadline = time.monotonic() + self.start_timeout_s
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(timeout=left):
                    break
                line = self.process.stdout.readline().decode(errors="replace")
                if not line:
                    raise WorkerError(f"SAM2 worker exited with code {self.process.wait()} before it was ready")
                if line.startswith(READY):
                    return int(line.split()[1])
        raise WorkerError(f"SAM2 worker not ready after {self.start_timeout_s:.0f}s (see its stderr)")

    def post(self, path: str, body: bytes, timeout: float) -> bytes:
        """POST body to 127.0.0.1:port/path -> the 200 reply body; raises WorkerTimeout, WorkerRejected, WorkerError."""
        if not self.alive():
            raise WorkerError("SAM2 worker is not running")
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
            response = connection.getresponse()
            data = response.read()
        except TimeoutError as error:
            raise WorkerTimeout(f"SAM2 worker {self.pid} gave no reply within {timeout:.1f}s") from error
        except (OSError, http.client.HTTPException) as error:
            raise WorkerError(f"SAM2 worker {self.pid} connection failed: {error!r}") from error
        finally:
            connection.close()
        if 400 <= response.status < 500:
            raise WorkerRejected(
                f"SAM2 worker refused the request ({response.status}): {data.decode(errors='replace')}"
            )
        if response.status != 200:
            raise WorkerError(f"SAM2 worker answered {response.status}: {data.decode(errors='replace')}")
        return data

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        """GET path -> its JSON (for /health and /stats)."""
        connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self) -> None:
        """Closes its stdin (it exits), then terminates and kills it if it lingers; waits for it either way."""
        process, self.process, self.port = self.process, None, None
        if process is None:
            return
        for step in (_close_stdin, subprocess.Popen.terminate, subprocess.Popen.kill):
            if process.poll() is not None:
                break
            step(process)
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                continue
        if process.stdout is not None:
            process.stdout.close()


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    try:
        process.stdin.close()
    except OSError:
        pass


if __name__ == "__main__":
    main()
