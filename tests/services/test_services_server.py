"""Out-of-process SAM2 with real worker processes: loopback only, binary requests with a size limit, results equal to
in-process scoring, a worker killed mid-request is restarted and the request resent, exhausted retries and timeouts
take the fallback, and no worker outlives its test or its parent; an idle client does not block /health, and a
malformed Content-Length gets 400."""

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from sam2_cases import BOXES, RESPONSES, SAM2_TEST_OPTIONS, answer, reference_scores, synthetic_frames, veason_group

from vrsjax.rewards.scorer import RewardScorer, SAM2Options
from vrsjax.services import wire
from vrsjax.services.server import HOST, Worker, WorkerRejected, pack_masks, unpack_masks

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.slow,
]

OPTIONS = SAM2Options(**SAM2_TEST_OPTIONS)
LONG_GROUP = [answer(6, [[18 + k, 8, 42, 33 - k]]) for k in range(8)]  # 8 distinct jobs: a request that takes a while


def busy(port: int) -> bool:
    """Whether the worker is inside a SAM2 request (its /health says so; it answers while busy)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())["busy"]
    except (OSError, http.client.HTTPException):  # between restarts
        return False
    finally:
        connection.close()


def kill_while_busy(scorer: RewardScorer, index: int, timeout: float = 60.0) -> int:
    """SIGKILLs worker `index` once it is in the middle of a request; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, port = scorer.worker_pids()[index], scorer.worker_ports()[index]
        if port is not None and busy(port):
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    raise AssertionError("the worker never got busy")


def assert_gone(pids) -> None:
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid


def test_worker_serves_loopback_only_and_checks_requests(sam2_service):
    worker = Worker(SAM2_TEST_OPTIONS, max_request_bytes=200_000, threads=1)
    worker.start()
    try:
        listening = [c.laddr for c in psutil.Process(worker.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening == [(HOST, worker.port)]
        assert worker.get_json("/health")["host"] == "127.0.0.1"
        frames = synthetic_frames()
        jobs = [{"keyframe": 2, "boxes": BOXES}, {"keyframe": 9, "boxes": BOXES}]
        reply = wire.decode(worker.post("/propagate", wire.encode({"frames": frames, "jobs": jobs}), timeout=60))
        masks = unpack_masks(reply)
        np.testing.assert_array_equal(masks[0], sam2_service.propagate(frames, 2, BOXES))
        assert masks[1].startswith("ValueError: SAM2 keyframe 9 is outside")  # a bad job fails alone
        assert reply["counters"]["sam2_errors"] == 1
        with pytest.raises(WorkerRejected, match="413"):
            worker.post("/propagate", bytes(200_001), timeout=10)
        with pytest.raises(WorkerRejected, match="400.*malformed"):
            worker.post("/propagate", b"pickle? no", timeout=10)
        assert worker.get_json("/stats")["requests_too_large"] == 1
    finally:
        pid = worker.pid
        worker.stop()
    assert_gone([pid])


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.sendall(data)
        return conn.recv(4096)


def test_an_idle_client_does_not_block_health_and_a_bad_length_gets_400():
    worker = Worker(SAM2_TEST_OPTIONS, threads=1)  # the 60 s read timeout: an idle client is not timed out soon
    worker.start()
    try:
        with socket.create_connection((HOST, worker.port)):  # connected, sends nothing
            assert worker.get_json("/health", timeout=5)["busy"] is False  # answered at once, not after 60 s
            head = b"POST /propagate HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n"
            assert raw_request(worker.port, head % b"twelve").split(b"\r\n")[0].endswith(b" 400 Bad Request")
            assert raw_request(worker.port, head % b"-5").split(b"\r\n")[0].endswith(b" 400 Bad Request")
            assert worker.get_json("/stats")["requests_malformed"] == 2
    finally:
        pid = worker.pid
        worker.stop()
    assert worker.pid is None and worker.last_pid == pid  # kept for the restart log line
    assert_gone([pid])


def test_pack_and_unpack_masks():
    masks = [np.random.default_rng(0).random((3, 5, 7)) > 0.5, "RuntimeError: boom"]
    back = unpack_masks(wire.decode(wire.encode(pack_masks(masks))))
    np.testing.assert_array_equal(back[0], masks[0])
    assert back[1] == "RuntimeError: boom"


def test_server_mode_survives_a_worker_killed_mid_batch(sam2_service):
    groups = [veason_group(LONG_GROUP), veason_group(), veason_group(LONG_GROUP[::-1]), veason_group(RESPONSES[:3])]
    expected = np.concatenate([reference_scores(group, sam2_service) for group in groups])
    with RewardScorer(sam2=OPTIONS, mode="server", workers=2, worker_threads=1, retries=2) as scorer:
        first_pids = scorer.worker_pids()
        pending = scorer.submit(groups)
        killed = kill_while_busy(scorer, 0)
        result = pending.result(timeout=300)
        counters = scorer.counters()
        pids = first_pids + scorer.worker_pids()
    np.testing.assert_array_equal(result.scores, expected)
    assert not result.sam2_failed.any()
    assert counters["worker_restarts"] >= 1 and counters["request_errors"] >= 1 and counters["request_retries"] >= 1
    assert killed not in scorer.worker_pids()
    assert_gone([pid for pid in pids if pid is not None])


def test_exhausted_retries_take_the_fallback_and_the_worker_comes_back(sam2_service, caplog):
    caplog.set_level(logging.WARNING, logger="vrsjax.rewards.scorer")
    with RewardScorer(
        sam2=OPTIONS, mode="server", workers=1, worker_threads=1, retries=0, consistency_fallback=0.25
    ) as s:
        pending = s.submit([veason_group(LONG_GROUP)])
        killed = kill_while_busy(s, 0)
        result = pending.result(timeout=120)
        np.testing.assert_array_equal(
            result.scores, reference_scores(veason_group(LONG_GROUP), fallback_for_matched=0.25)
        )
        assert result.sam2_failed.all() and s.counters()["sam2_fallbacks"] == len(LONG_GROUP)
        again = s.score([veason_group(RESPONSES[:2])], timeout=120)  # the next request restarts the worker
        np.testing.assert_array_equal(again.scores, reference_scores(veason_group(RESPONSES[:2]), sam2_service))
        assert s.counters()["worker_restarts"] == 1
    assert f"restarting SAM2 worker (was pid {killed})" in caplog.text


def test_a_hung_request_times_out_then_falls_back():
    with RewardScorer(
        sam2=OPTIONS, mode="server", workers=1, worker_threads=1, retries=1, request_timeout_s=0.05
    ) as scorer:
        result = scorer.score([veason_group(LONG_GROUP)], timeout=120)
        counters = scorer.counters()
    assert result.sam2_failed.all()
    assert counters["request_timeouts"] == 2 and counters["worker_restarts"] == 1 and counters["request_retries"] == 1


def test_an_oversized_request_is_not_sent():
    with RewardScorer(sam2=OPTIONS, mode="server", workers=1, worker_threads=1, max_request_bytes=10_000) as scorer:
        result = scorer.score([veason_group()], timeout=60)
        counters = scorer.counters()
    assert result.sam2_failed.sum() == 4 and counters["requests_too_large"] == 1
    assert "request_errors" not in counters


def test_workers_exit_when_their_parent_dies(tmp_path):
    code = (
        "import json, sys, time\n"
        "from vrsjax.services.server import Worker\n"
        f"w = Worker({SAM2_TEST_OPTIONS!r}, threads=1)\n"
        "w.start()\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        worker_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(worker_pid)
    finally:
        parent.kill()
        parent.wait(timeout=10)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(worker_pid) and psutil.Process(worker_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the orphaned worker kept running"
        time.sleep(0.1)
