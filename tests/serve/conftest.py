"""`vrsjax serve` on a tiny random checkpoint, started once per session as a subprocess on a free loopback port."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vrsjax.testing import write_tiny_checkpoint

MAX_REQUEST_MB = 0.5


class ServedModel:
    def __init__(self, url: str, model: str, proc: subprocess.Popen, log: Path):
        self.url, self.model, self.proc, self.log = url, model, proc, log


def start_server(checkpoint, log: Path, *extra: str, deadline_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start `vrsjax serve --port 0` (output to log), wait for its READY line; -> (process, http://127.0.0.1:PORT)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    env.pop("XLA_FLAGS", None)  # a server uses one device
    cmd = [sys.executable, "-m", "vrsjax.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0", *extra]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("VRSJAX_SERVE_READY")]
        if ready:
            return proc, ready[0].split()[1]
        time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"vrsjax serve did not start within {deadline_s} s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    checkpoint = write_tiny_checkpoint(folder / "tiny", tokenizer=True)
    log = folder / "serve.log"
    proc, url = start_server(checkpoint, log, "--model-name", "tiny", "--max-request-mb", str(MAX_REQUEST_MB))
    yield ServedModel(url, "tiny", proc, log)
    stop_server(proc)
