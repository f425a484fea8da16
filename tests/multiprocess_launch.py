"""Start N copies of a worker script as one `jax.distributed` run on this machine (CPU collectives, a coordinator
on 127.0.0.1 at a free port), wait for all with a deadline and kill every one that is left, whatever happens.

Shared by the multi-process tests (not a test module). Each process gets JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID, which `vrsjax.parallel.distributed.initialize()` reads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: Path, args: list[str], num: int, logs_dir: Path, deadline_s: float) -> list[str]:
    """Run `num` processes of `python script *args` to completion; -> each one's output. Raises AssertionError
    naming the failed processes (with the tails of their logs) or the deadline."""
    port = free_port()
    procs, logs = [], []
    try:
        for i in range(num):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "TPU_"))}
            env |= {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(num)}
            env["JAX_PROCESS_ID"] = str(i)
            log = open(logs_dir / f"log_{i}.txt", "w+")  # noqa: SIM115 - closed in finally
            logs.append(log)
            procs.append(
                subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        deadline = time.monotonic() + deadline_s
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{num} processes did not finish within {deadline_s}s:\n{_tails(logs)}") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        outputs = _read(logs)
        for log in logs:
            log.close()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        tails = "\n".join(f"--- process {i} ---\n{outputs[i][-3000:]}" for i in failed)
        raise AssertionError(f"processes {failed} failed:\n{tails}")
    return outputs


def _read(logs) -> list[str]:
    out = []
    for log in logs:
        log.flush()
        log.seek(0)
        out.append(log.read())
    return out


def _tails(logs) -> str:
    return "\n".join(f"--- process {i} ---\n{text[-3000:]}" for i, text in enumerate(_read(logs)))
