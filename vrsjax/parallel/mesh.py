"""Build the device mesh: axes `data`, `fsdp`, `tensor`, described as data (`-1` = the remaining devices).

`make_mesh(fsdp=-1)` on 8 devices gives data=1, fsdp=8, tensor=1. Multi-host runs call
`initialize_distributed()` first (a no-op for a single process; see `vrsjax.parallel.distributed`) and get a mesh
over every process's devices. Devices are laid out with `tensor` innermost, so with JAX's process-major device order
a tensor-parallel group stays within one host (NVLink / ICI neighbours) and `data` varies slowest; on TPU the grid
comes from `mesh_utils.create_device_mesh`, which follows the physical torus.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "tensor")


def resolve_axes(sizes: dict[str, int], num_devices: int) -> dict[str, int]:
    """{'data': 1, 'fsdp': -1, 'tensor': 2}, 8 -> {'data': 1, 'fsdp': 4, 'tensor': 2}."""
    unknown = set(sizes) - set(AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; the axes are {AXES}")
    sizes = {a: int(sizes.get(a, 1)) for a in AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh: {sizes}: sizes must be positive, with at most one -1 (the rest of the devices)")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh: {sizes}: {num_devices} devices are not divisible by {fixed}")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"mesh: {sizes} uses {math.prod(sizes.values())} devices but {num_devices} are available; "
            f"set one axis to -1 or make the product match"
        )
    return sizes


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_axes({"data": data, "fsdp": fsdp, "tensor": tensor}, len(devices))
    shape = tuple(sizes[a] for a in AXES)
    return Mesh(_device_grid(devices, shape), AXES)


def _device_grid(devices: list, shape: tuple[int, ...]) -> np.ndarray:
    """Devices arranged as `shape`; on TPU in the physical torus order when JAX knows the topology (one slice)."""
    if devices[0].platform == "tpu":
        from jax.experimental import mesh_utils

        try:
            return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
        except (ValueError, NotImplementedError, AssertionError):  # e.g. several slices: plain order is still correct
            pass
    return np.asarray(devices).reshape(shape)


def initialize_distributed(config=None):
    """Join a multi-process run from `config` (a `DistributedConfig` or mapping) or the environment: explicit
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, SLURM, Open MPI or a Cloud TPU pod slice.
    A no-op for a single process. Returns the resolved `Launch`."""
    from vrsjax.parallel.distributed import initialize

    return initialize(config)
