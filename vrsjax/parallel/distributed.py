"""Multi-process runs: join `jax.distributed` from explicit settings or the launcher's environment, and log once.

`detect()` is a pure function from (settings, environment) to a `Launch`: explicit `DistributedConfig` fields win,
then `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, then the cluster the process runs in:
SLURM (`srun`, one task per host or per GPU), Open MPI (`mpirun`), or a Cloud TPU VM (a pod slice, where the worker
list comes from the TPU metadata); otherwise it is a single process and nothing is initialized. For the clusters,
JAX's own detection fills whatever the launch does not name (the SLURM coordinator is the step's first node on a
port derived from the job id, or `JAX_COORDINATOR_PORT`). `initialize()` acts on it, once, before any device is
touched. Every process then sees the global device list, so `make_mesh()` spans all hosts.

Process 0 writes logs (`is_main_process`, `main_print`, `setup_logging`); errors still print everywhere.
Checkpoints with orbax are multi-host safe when *every* process calls save and restore with the same global
arrays (orbax coordinates the processes; the primary one writes metadata) into a directory all hosts see (GCS or
a shared filesystem), and restore is given sharded targets (`jax.ShapeDtypeStruct(..., sharding=...)`) so each host
reads only its shards; `vrsjax.checkpoint` and the trainer's CheckpointManager follow that rule.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import sys
from collections.abc import Mapping

import jax

SOURCES = ("single", "explicit", "env", "slurm", "ompi", "tpu")
GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of this vendor on a Cloud TPU VM


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """What a launch script may pin; None = from the environment. `coordinator_address` is process 0's host:port."""

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    initialization_timeout: int = 300  # seconds to wait for all processes to join

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> DistributedConfig:
        """From a config section or dict; unknown keys raise naming the valid ones."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"distributed: unknown keys {unknown}; valid keys: {sorted(names)}")
        if values.get("local_device_ids") is not None:
            values["local_device_ids"] = tuple(int(i) for i in values["local_device_ids"])
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Launch:
    """The resolved launch: where its settings came from and what `jax.distributed.initialize` will be given
    (None fields are left to JAX's cluster detection)."""

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    initialization_timeout: int = 300

    @property
    def multi_process(self) -> bool:
        return self.source != "single"


def detect(config: DistributedConfig | Mapping | None = None, env: Mapping[str, str] | None = None) -> Launch:
    """Resolve the launch from `config` and the environment `env` (default os.environ); touches no device."""
    config = config if isinstance(config, DistributedConfig) else DistributedConfig.from_mapping(config)
    env = os.environ if env is None else env
    given = {
        "coordinator_address": config.coordinator_address,
        "num_processes": config.num_processes,
        "process_id": config.process_id,
    }
    from_env = {
        "coordinator_address": env.get("JAX_COORDINATOR_ADDRESS") or env.get("COORDINATOR_ADDRESS"),
        "num_processes": _int_env(env, "JAX_NUM_PROCESSES"),
        "process_id": _int_env(env, "JAX_PROCESS_ID"),
    }
    values = {key: given[key] if given[key] is not None else from_env[key] for key in given}
    common = dict(local_device_ids=config.local_device_ids, initialization_timeout=config.initialization_timeout)
    cluster = _cluster(env)
    if None not in values.values():
        source = "explicit" if any(v is not None for v in given.values()) else "env"
        return _checked(Launch(source, **values, **common))
    if cluster == "slurm":
        values["num_processes"] = values["num_processes"] or _int_env(env, "SLURM_NTASKS")
        values["process_id"] = _first(values["process_id"], _int_env(env, "SLURM_PROCID"))
    if cluster is not None:
        return _checked(Launch(cluster, **values, **common))
    named = {key: value for key, value in values.items() if value is not None}
    if named:
        missing = sorted(set(values) - set(named))
        raise ValueError(
            f"distributed: {named} given but {missing} missing and no cluster (SLURM, Open MPI, Cloud TPU) "
            "detected; set all three (DistributedConfig or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
            "JAX_PROCESS_ID), or none for a single process"
        )
    return Launch("single", num_processes=1, process_id=0, **common)


def initialize(config: DistributedConfig | Mapping | None = None, env: Mapping[str, str] | None = None) -> Launch:
    """Join the multi-process run `detect` finds (a no-op for a single process or when already joined).

    Call it first thing, before any JAX computation or `jax.devices()`."""
    launch = detect(config, env)
    if not launch.multi_process or jax.distributed.is_initialized():
        return launch
    jax.distributed.initialize(
        coordinator_address=launch.coordinator_address,
        num_processes=launch.num_processes,
        process_id=launch.process_id,
        local_device_ids=list(launch.local_device_ids) if launch.local_device_ids is not None else None,
        initialization_timeout=launch.initialization_timeout,
    )
    return launch


def is_main_process() -> bool:
    """True on process 0, the one that writes logs, metrics and reports (every process still writes checkpoints)."""
    return jax.process_index() == 0


def main_print(*args, **kwargs) -> None:
    """print() on process 0 only."""
    if is_main_process():
        print(*args, **kwargs)


def setup_logging(level: int | str = logging.INFO, stream=None) -> logging.Logger:
    """Root logging: `level` on process 0, warnings and errors on the others, each line tagged `[p<i>/<n>]`."""
    tag = f"p{jax.process_index()}/{jax.process_count()}"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{tag}] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_vrsjax", False)]:
        root.removeHandler(old)
    handler._vrsjax = True
    root.addHandler(handler)
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root.setLevel(level if is_main_process() else max(logging.WARNING, level))
    return root


# ----- detection -----


def _cluster(env: Mapping[str, str]) -> str | None:
    """The multi-process cluster this process was launched in, or None (one process, or no known launcher)."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(key in env for key in slurm) and (_int_env(env, "SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if (_int_env(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h]) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if env is os.environ and "tpu" in env.get("JAX_PLATFORMS", "tpu") and _on_cloud_tpu_vm():
        return "tpu"  # a pod slice's hosts come from the metadata server; one host joins as a 1-process run
    return None


def _on_cloud_tpu_vm() -> bool:
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _checked(launch: Launch) -> Launch:
    n, i = launch.num_processes, launch.process_id
    if n is not None and n < 1:
        raise ValueError(f"distributed: num_processes={n} must be >= 1")
    if n is not None and i is not None and not 0 <= i < n:
        raise ValueError(f"distributed: process_id={i} must be in [0, num_processes={n})")
    address = launch.coordinator_address
    if address is not None and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
        raise ValueError(f"distributed: coordinator_address={address!r} must be host:port, e.g. 10.0.0.1:1234")
    return launch


def _int_env(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} must be an integer") from None


def _first(*values):
    return next((v for v in values if v is not None), None)
