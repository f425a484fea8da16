"""Build the device mesh: axes `data`, `fsdp`, `tensor`, described as data (`-1` = the remaining devices).

`make_mesh(fsdp=-1)` on 8 devices gives data=1, fsdp=8, tensor=1. Multi-host runs call
`initialize_distributed()` first (a no-op for a single process) and get a mesh over every process's devices.
"""

from __future__ import annotations

import math
import os

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
    grid = np.asarray(devices).reshape(tuple(sizes[a] for a in AXES))
    return Mesh(grid, AXES)


def initialize_distributed() -> None:
    """Join a multi-process run when the launcher set JAX's coordinator variables; otherwise do nothing."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
