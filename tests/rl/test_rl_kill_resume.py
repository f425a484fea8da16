"""kill -9 between two GRPO steps, then `restore()`: the next step's loss and parameters equal an uninterrupted
run's. Each run is its own process (rl_kill_driver.py) with a deadline; every process is killed before the test
returns, whatever happens."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from vrsjax.testing import write_tiny_checkpoint

DRIVER = Path(__file__).with_name("rl_kill_driver.py")
REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 420


def _start(ckpt, run, steps, *extra):
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "log.txt", "w+")  # noqa: SIM115 - closed by _finish
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(ckpt), str(run), str(steps), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    watchdog = threading.Timer(DEADLINE_S, proc.kill)  # a hung run fails the test instead of stalling it
    watchdog.start()
    return proc, log, watchdog


def _finish(proc, log, watchdog) -> str:
    try:
        out, _ = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watchdog.cancel()
        log.seek(0)
        err = log.read()[-3000:]
        log.close()
    assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{out}\n{err}"
    return out


@pytest.mark.slow
def test_kill_9_between_steps_then_resume_equals_uninterrupted(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny", seed=0)
    straight = _start(ckpt, tmp_path / "straight", 2)
    proc, log, watchdog = _start(ckpt, tmp_path / "killed", 3)
    try:
        for line in proc.stdout:  # the watchdog ends this loop if the driver hangs
            if line.strip() == "SAVED 1":
                os.kill(proc.pid, signal.SIGKILL)  # step 2 is running now
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        watchdog.cancel()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    with ocp.CheckpointManager((tmp_path / "killed" / "checkpoints").absolute()) as manager:
        assert manager.all_steps() == [1]  # killed between steps: only step 1 is complete
    (tmp_path / "killed" / "step_2.npz").unlink(missing_ok=True)

    out = _finish(*_start(ckpt, tmp_path / "killed", 2, "--resume"))
    assert "RESUMED 1" in out and "SAVED 2" in out
    _finish(*straight)
    want, got = np.load(tmp_path / "straight" / "step_2.npz"), np.load(tmp_path / "killed" / "step_2.npz")
    assert abs(float(got["loss"]) - float(want["loss"])) <= 1e-5
    assert np.abs(got["params"] - want["params"]).max() <= 1e-6
