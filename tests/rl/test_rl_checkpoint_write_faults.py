"""`vrsjax train-grpo` when a checkpoint write fails inside orbax (rl_fault_driver.py injects it): the run ends at
once with exit 1 and one line naming the step, the path and the cause, leaves no partial folder, and the rerun
resumes from the newest complete checkpoint without logging a step twice. Each run is its own process with a
deadline: before the fix a failed write left orbax's threads waiting forever and the process never exited."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrsjax.data.synthetic import write_dataset
from vrsjax.rl import metrics_log
from vrsjax.testing import write_tiny_checkpoint

DRIVER = Path(__file__).with_name("rl_fault_driver.py")
REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 420


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    model = write_tiny_checkpoint(root / "tiny")
    write_dataset(root / "data", 2, 0)
    return [
        "train-grpo",
        "config=configs/demo.yaml",
        f"worker.actor.model.model_path={model}",
        f"data.train_files={root / 'data'}",
        "trainer.max_steps=2",
        "trainer.save_freq=1",
        "data.max_response_length=8",
        "trainer.logger=[console,tensorboard]",
    ]


def run_cli(fault: str, run: Path, recipe: list[str]) -> tuple[int, list[str]]:
    """(exit code, stderr lines other than the progress bar) of one run; a run past the deadline fails the test."""
    command = [sys.executable, str(DRIVER), fault, "2", *recipe, f"trainer.save_checkpoint_path={run}"]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the run did not end within {DEADLINE_S}s:\n{hung.stderr}") from None
    lines = [line.strip() for line in done.stderr.replace("\r", "\n").splitlines()]
    return done.returncode, [line for line in lines if line and not line.startswith("GRPO:")]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("mkdir", "PermissionError: [Errno 1] Operation not permitted: '{path}.orbax-checkpoint-tmp'"),  # chattr +i
        ("write", "OSError: [Errno 28] No space left on device"),  # a full disk, in orbax's background thread
    ],
)
def test_a_failed_checkpoint_write_ends_the_run_with_one_line_then_resume_continues(recipe, tmp_path, fault, why):
    run = tmp_path / "run"
    code, lines = run_cli(fault, run, recipe)
    path = run / "checkpoints" / "2"
    assert code == 1
    assert lines == [
        f"vrsjax train-grpo: checkpoint step 2 could not be written to {path}: {why.format(path=path)}. Training "
        "stopped; fix the cause (disk space, permissions) and rerun: it resumes from step 1 "
        "(trainer.find_last_checkpoint)"
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]  # no partial folder left
    assert not (run / "hf").exists()
    if fault == "mkdir":  # the rerun with that checkpoint damaged and none older: refused in one line, kept
        largest = max((run / "checkpoints" / "1" / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
        os.truncate(largest, largest.stat().st_size // 2)
        # tensorstore finishing orbax's abandoned reads into its closed loop used to add "Event loop is closed"
        # tracebacks here, one per array, timing-dependent (checkpoint.quiet_orbax drops them): run it three times
        for _ in range(3):
            code, lines = run_cli("none", run, recipe)
            assert code == 1 and len(lines) == 1, lines
        assert lines[0].startswith(f"vrsjax train-grpo: checkpoint {run / 'checkpoints' / '1'} cannot be restored: ")
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]
    if fault == "write":  # the rerun: from step 1, step 2's line (written before its checkpoint failed) replaced
        code, lines = run_cli("none", run, recipe)
        assert code == 0, lines
        assert [m["step"] for m in metrics_log.read(run / "metrics.jsonl")] == [1, 2]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]
        assert (run / "hf").is_dir()
