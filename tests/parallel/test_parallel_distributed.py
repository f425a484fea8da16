"""Launch detection (explicit settings, JAX_* variables, SLURM, Open MPI, TPU pods), per-process rows, logging."""

import io
import logging

import jax
import numpy as np
import pytest

from vrsjax.parallel import distributed
from vrsjax.parallel.data import batch_sharding, host_local_to_global, process_rows, put_global
from vrsjax.parallel.distributed import DistributedConfig, detect
from vrsjax.parallel.mesh import initialize_distributed, make_mesh

SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[003-004]",
    "SLURM_NTASKS": "16",
    "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1",
}


def test_single_process_by_default():
    launch = detect(env={})
    assert launch.source == "single" and not launch.multi_process
    assert (launch.num_processes, launch.process_id) == (1, 0)


def test_env_variables():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    launch = detect(env=env)
    assert (launch.source, launch.coordinator_address, launch.num_processes, launch.process_id) == (
        "env",
        "10.0.0.1:1234",
        4,
        3,
    )


def test_explicit_config_wins_over_env_and_cluster():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3", **SLURM}
    launch = detect({"process_id": 1, "local_device_ids": [0, 1]}, env=env)
    assert (launch.source, launch.process_id, launch.num_processes) == ("explicit", 1, 4)
    assert launch.local_device_ids == (0, 1)


def test_slurm_fills_counts_and_leaves_the_coordinator_to_jax():
    launch = detect(env=SLURM)
    assert (launch.source, launch.num_processes, launch.process_id, launch.coordinator_address) == (
        "slurm",
        16,
        9,
        None,
    )
    # a pinned coordinator (e.g. a port the cluster allows) is kept
    assert detect({"coordinator_address": "gpu003:8476"}, env=SLURM).coordinator_address == "gpu003:8476"
    assert detect(env={**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}).source == "single"


def test_ompi_and_tpu_pods_are_left_to_jax_detection():
    assert detect(env={"OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_RANK": "2"}).source == "ompi"
    launch = detect(env={"TPU_WORKER_HOSTNAMES": "t1k-0,t1k-1,t1k-2,t1k-3", "TPU_WORKER_ID": "2"})
    assert launch.source == "tpu" and launch.num_processes is None and launch.coordinator_address is None
    assert detect(env={"TPU_WORKER_HOSTNAMES": "localhost"}).source == "single"


@pytest.mark.parametrize(
    "config, env, message",
    [
        ({"coordinator_address": "10.0.0.1:1234"}, {}, r"\['num_processes', 'process_id'\] missing"),
        ({}, {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' must be an integer"),
        ({"coordinator_address": "10.0.0.1", "num_processes": 2, "process_id": 0}, {}, "must be host:port"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {}, r"process_id=2 must be in \[0, "),
        ({"coordinator": "h:1"}, {}, "unknown keys \\['coordinator'\\]"),
    ],
)
def test_bad_settings_name_the_problem(config, env, message):
    with pytest.raises(ValueError, match=message):
        detect(config, env=env)


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for key in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(key, raising=False)
    for key in SLURM:
        monkeypatch.delenv(key, raising=False)
    assert initialize_distributed().source == "single"
    assert distributed.initialize(DistributedConfig()).source == "single"
    assert not jax.distributed.is_initialized()


def test_process_rows_and_global_batch_on_one_process():
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    assert process_rows(8, mesh).tolist() == list(range(8))
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    glob = host_local_to_global({"x": x}, mesh, 8)["x"]
    np.testing.assert_array_equal(np.asarray(glob), x)
    assert glob.sharding.spec[0] == ("data", "fsdp")
    assert glob.addressable_shards[0].data.shape == (2, 3)
    with pytest.raises(ValueError, match=r"6 rows does not split over the 4 batch shards \(data=2 x fsdp=2\)"):
        batch_sharding(mesh, 6)


def test_put_global_places_by_sharding():
    mesh = make_mesh(data=1, fsdp=4, tensor=2)
    sharding = batch_sharding(mesh, 8, ndim=2)
    value = np.arange(16.0).reshape(8, 2)
    placed = put_global(value, sharding)
    assert placed.sharding == sharding
    np.testing.assert_array_equal(np.asarray(placed), value)
    np.testing.assert_array_equal(np.asarray(put_global(value, None)), value)


def test_logging_only_main_process_speaks_below_warning():
    stream = io.StringIO()
    level = logging.getLogger().level
    root = distributed.setup_logging("info", stream=stream)
    try:
        logging.getLogger("vrsjax.test").info("hello")
        assert "[p0/1] INFO vrsjax.test: hello" in stream.getvalue()
        assert distributed.is_main_process()
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_vrsjax", False)]:
            root.removeHandler(handler)
        root.setLevel(level)
