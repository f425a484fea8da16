"""Faults at the checkpoint layer, on the tiny model: a newest checkpoint that no longer restores is moved aside and
the run resumes from the one before; steps after the restored checkpoint are not logged twice (metrics.jsonl,
TensorBoard) and the curves show the whole run. (A failing write: test_rl_checkpoint_write_faults.py.)"""

import json
import os
import shutil
from pathlib import Path

import pytest
from test_rl_trainer import make_trainer, tiny  # noqa: F401 - the module's tiny model fixture

from vrsjax.checkpoint import CheckpointError, cause, move_aside, remove_partial
from vrsjax.rl import metrics_log
from vrsjax.rl import trainer as trainer_module
from vrsjax.rl.tensorboard import SummaryWriter, keep_until, read_scalars

OPTIONS = {"trainer.save_freq": 1, "trainer.max_steps": 3, "trainer.logger": "[console,tensorboard]"}


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):  # noqa: F811
    """A 3-step run with a checkpoint after every step, its metrics and TensorBoard events; copied by each test."""
    run = tmp_path_factory.mktemp("trained")
    trainer = make_trainer(tiny, run, **OPTIONS)
    history = trainer.train()
    trainer.close()
    return run, history


def copy_run(trained, tmp_path) -> Path:
    shutil.copytree(trained[0], tmp_path / "run")
    return tmp_path / "run"


def data_files(step_dir: Path) -> list[Path]:
    """The checkpoint's array data files, largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def truncate_largest(step_dir: Path) -> None:
    largest = data_files(step_dir)[0]
    os.truncate(largest, largest.stat().st_size // 2)


def empty(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


DAMAGE = {
    "half a data file cut away": truncate_largest,
    "a data file deleted": lambda d: data_files(d)[0].unlink(),
    "state/_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "meta/metadata deleted": lambda d: (d / "meta" / "metadata").unlink(),
    "an empty folder": empty,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(
    tiny,  # noqa: F811
    trained,
    tmp_path,
    capsys,
    damage,
):
    run = copy_run(trained, tmp_path)
    checkpoints = run / "checkpoints"
    DAMAGE[damage](checkpoints / "3")
    trainer = make_trainer(tiny, run, **OPTIONS)
    try:
        assert trainer.restore()
        assert trainer.step_count == 2
    finally:
        trainer.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [line for line in lines if str(checkpoints / "3") in line]  # one line, naming it
    assert len(lines) == 1 and "moved it aside to 3.damaged; resuming from step 2" in lines[0], lines
    assert not (checkpoints / "3").exists() and (checkpoints / "3.damaged").is_dir()  # renamed, not deleted
    assert sorted(p.name for p in checkpoints.iterdir()) == ["1", "2", "3.damaged"]


def test_when_no_checkpoint_restores_nothing_is_moved(tiny, trained, tmp_path):  # noqa: F811
    """Checkpoints of another model (here: with LoRA adapters the run did not have) are not damaged: refused with
    the newest named, and left where they are."""
    run = copy_run(trained, tmp_path)
    trainer = make_trainer(tiny, run, **OPTIONS, **{"worker.actor.lora_rank": 2})
    try:
        with pytest.raises(CheckpointError, match=f"checkpoint {run / 'checkpoints' / '3'} cannot be restored"):
            trainer.restore()
    finally:
        trainer.close()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2", "3"]


def test_resume_after_a_kill_before_the_checkpoint_logs_each_step_once(tiny, trained, tmp_path, monkeypatch):  # noqa: F811
    """Killed after step 3's metrics line and TensorBoard event, before its checkpoint was complete (orbax's partial
    folder left): the resumed run drops them, trains step 3 again, and plots all 3 steps."""
    run = copy_run(trained, tmp_path)
    (run / "checkpoints" / "3").rename(run / "checkpoints" / "3.orbax-checkpoint-tmp")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward/sco')  # and a line torn by the kill
    plotted = []
    real_plot = trainer_module.plot_history
    monkeypatch.setattr(trainer_module, "plot_history", lambda h, p: plotted.append(h) or real_plot(h, p))
    trainer = make_trainer(tiny, run, **OPTIONS)
    try:
        history = trainer.train(resume=True)
    finally:
        trainer.close()
    assert [m["step"] for m in history] == [3]
    assert history[0]["reward/score_mean"] == pytest.approx(trained[1][2]["reward/score_mean"], abs=1e-6)
    assert [m["step"] for m in metrics_log.read(run / "metrics.jsonl")] == [1, 2, 3]
    events = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(step for path in events for step, _ in read_scalars(path)) == [1, 2, 3]
    assert [[m["step"] for m in h] for h in plotted] == [[1, 2, 3]]  # the whole run, not only the resumed part
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2", "3"]  # the partial one cleaned


def test_metrics_log_keeps_steps_until_the_restored_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        metrics_log.append(log, {"step": step, "x": float(step)})
    with log.open("a") as f:
        f.write('{"step": 4, "x"')  # torn
    assert [m["step"] for m in metrics_log.read(log)] == [1, 2, 3]
    assert metrics_log.keep_until(log, 2) == 2
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert metrics_log.keep_until(log, 5) == 0 and metrics_log.keep_until(tmp_path / "none.jsonl", 0) == 0


def test_tensorboard_keeps_events_until_the_restored_step(tmp_path):
    writer = SummaryWriter(tmp_path)
    for step in (1, 2, 3):
        writer.add_scalars({"loss": float(step)}, step)
    writer.close()
    with writer.path.open("ab") as f:
        f.write(b"\x10\x00\x00")  # a record torn by a kill
    assert keep_until(tmp_path, 2) == 1  # step 3's event; the torn record goes too
    assert read_scalars(writer.path) == [(1, {"loss": 1.0}), (2, {"loss": 2.0})]  # every CRC checks, nothing torn
    assert b"brain.Event:2" in writer.path.read_bytes()[:64]  # the file_version event stays first
    assert keep_until(tmp_path, 2) == 0


def test_cause_move_aside_and_remove_partial(tmp_path):
    try:
        try:
            raise ValueError("OUT_OF_RANGE: Error reading\n  'params.w/0.0'")
        except ValueError as inner:
            raise RuntimeError("Encountered error while reading array index: <long TensorStore spec>") from inner
    except RuntimeError as outer:
        assert cause(outer) == "ValueError: OUT_OF_RANGE: Error reading 'params.w/0.0'"
    (tmp_path / "3").mkdir()
    (tmp_path / "3.damaged").mkdir()
    assert move_aside(tmp_path / "3") == tmp_path / "3.damaged.2" and not (tmp_path / "3").exists()
    (tmp_path / "4.orbax-checkpoint-tmp").mkdir()
    (tmp_path / "4").mkdir()
    remove_partial(tmp_path, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.damaged", "3.damaged.2", "4"]
