"""2 and 4 real processes on one machine (CPU collectives over gloo, 2 simulated devices each) against one process.

Each run starts `parallel_mp_worker.py` per process with a local coordinator on 127.0.0.1 and a free port; the
processes are waited on with a deadline and killed, whatever happens, before the test returns.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from parallel_mp_worker import TOY_BATCH, model_batch, toy_problem, toy_step

from vrsjax.models import qwen2_5_vl

WORKER = Path(__file__).with_name("parallel_mp_worker.py")
DEADLINE_S = 150


@pytest.fixture(scope="module")
def single_process(tiny):
    """The same forward pass and AdamW step in this process, unsharded."""
    model = qwen2_5_vl.from_pretrained(tiny)
    logits = np.asarray(model(**model_batch()))
    param_bytes = sum(v.get_value().nbytes for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    params, x, y = toy_problem()
    new, loss, grads = jax.jit(toy_step)(jax.tree.map(jnp.asarray, params), x, y)
    return (
        {"logits": logits, "loss": float(loss), "param_bytes": param_bytes}
        | {f"param_{k}": np.asarray(v) for k, v in new.items()}
        | {f"grad_{k}": np.asarray(v) for k, v in grads.items()}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(num: int, ckpt: Path, out: Path, *, via_env: bool, checkpoint: bool) -> list[dict]:
    """Run `num` workers to completion (or kill them at the deadline); -> their process_<i>.json records."""
    port = _free_port()
    procs, logs = [], []
    try:
        for i in range(num):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "TPU_"))}
            if via_env:
                env |= {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(num)}
                env["JAX_PROCESS_ID"] = str(i)
            else:
                env["VRSJAX_TEST_DIST"] = f"127.0.0.1:{port},{num},{i}"
            log = open(out / f"log_{i}.txt", "w+")  # noqa: SIM115 - closed in finally
            logs.append(log)
            args = [sys.executable, str(WORKER), str(ckpt), str(out)] + (["--checkpoint"] if checkpoint else [])
            procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + DEADLINE_S
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{num} processes did not finish within {DEADLINE_S}s:\n{_tails(logs)}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        tails = _tails(logs)
        for log in logs:
            log.close()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    assert not failed, f"processes {failed} failed:\n{tails}"
    return [json.loads((out / f"process_{i}.json").read_text()) for i in range(num)]


def _tails(logs) -> str:
    out = []
    for i, log in enumerate(logs):
        log.flush()
        log.seek(0)
        out.append(f"--- process {i} ---\n" + log.read()[-3000:])
    return "\n".join(out)


def _check(records, out: Path, single: dict, num: int, source: str) -> None:
    devices = 2 * num
    assert [r["process_index"] for r in records] == list(range(num))
    assert all(r["process_count"] == num and r["device_count"] == devices for r in records)
    assert all(r["local_device_count"] == 2 and r["source"] == source for r in records)
    assert records[0]["mesh"] == {"data": num // 2 if num > 2 else 1, "fsdp": 2, "tensor": 2}
    assert [r["is_main"] for r in records] == [True] + [False] * (num - 1)
    # every row of the global batch is fed, each by the processes of its shard (rows split over data x fsdp)
    fed = sorted(row for r in records for row in r["rows"])
    assert sorted(set(fed)) == list(range(TOY_BATCH))
    assert all(len(r["rows"]) == TOY_BATCH // (records[0]["mesh"]["data"] * 2) for r in records)
    # the parameters are split across processes, not replicated on each
    assert all(r["local_param_bytes"] < single["param_bytes"] for r in records)

    results = np.load(out / "results.npz")
    np.testing.assert_allclose(results["logits"], single["logits"], rtol=1e-4, atol=1e-4)
    for key in ("param_w1", "param_w2", "grad_w1", "grad_w2"):
        np.testing.assert_allclose(results[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert all(abs(r["loss"] - single["loss"]) < 1e-5 for r in records)
    logs = [(out / f"log_{i}.txt").read_text() for i in range(num)]
    assert "MAIN-PROCESS-LINE" in logs[0] and not any("MAIN-PROCESS-LINE" in text for text in logs[1:])


def test_two_processes_env_launch_and_orbax(tiny, single_process, tmp_path):
    records = _launch(2, tiny, tmp_path, via_env=True, checkpoint=True)
    _check(records, tmp_path, single_process, 2, source="env")
    assert all(r["restored_equal"] for r in records)


@pytest.mark.slow
def test_four_processes_explicit_config(tiny, single_process, tmp_path):
    records = _launch(4, tiny, tmp_path, via_env=False, checkpoint=False)
    _check(records, tmp_path, single_process, 4, source="explicit")
