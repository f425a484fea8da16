"""A GRPO step across 2 processes on one machine (jax.distributed, CPU collectives, 2 simulated devices each, the
parameters sharded over all 4) equals the same step in one process; each process loads only its share of the
prompts, and only process 0 writes the logs."""

import json
from pathlib import Path

import numpy as np
import pytest
from multiprocess_launch import launch
from test_rl_trainer import flat, make_trainer

from vrsjax.processing import Processor
from vrsjax.testing import write_tiny_checkpoint

WORKER = Path(__file__).with_name("rl_mp_worker.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_step_equals_one_process(tmp_path, monkeypatch):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny", seed=0)
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(REPO)  # the worker reads configs/demo.yaml
    outputs = launch(WORKER, [str(ckpt), str(run)], 2, tmp_path, deadline_s=600)

    one = make_trainer((ckpt, Processor.from_pretrained(ckpt)), tmp_path / "one", **{"worker.rollout.temperature": 0})
    want = one.step()
    records = [json.loads((run / f"process_{i}.json").read_text()) for i in range(2)]
    assert [(r["process_index"], r["process_count"], r["device_count"]) for r in records] == [(0, 2, 4), (1, 2, 4)]
    assert [r["loaded"] for r in records] == [1, 1]  # 2 prompts: each process read one
    got = np.load(run / "result.npz")
    assert all(abs(r["loss"] - want["actor/loss"]) <= 1e-5 for r in records)
    assert np.abs(got["params"] - flat(one.params)).max() <= 1e-5
    # process 0 alone logs: one metrics line, and the GRPO progress bar only in its output
    assert (run / "metrics.jsonl").read_text().count("\n") == 1
    assert "GRPO" in outputs[0] and "GRPO" not in outputs[1]
    one.close()
