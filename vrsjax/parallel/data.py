"""Per-process data: which rows of a global batch each process feeds, and host arrays -> global jax.Arrays.

A batch is sharded on its leading dimension over the mesh axes the `batch` rule names (`data`, `fsdp`), so in a
multi-process run each process owns the rows of its own devices. `process_rows` says which (the data loader reads
only those), `host_local_to_global` turns each process's rows into one global array
(`jax.make_array_from_process_local_data`), and `put_global` places a value every process holds in full (a weight
read from a checkpoint) reading only the local shards, without the cross-process equality check `device_put` runs
(an all-gather of the whole tensor onto every host). With one process all three reduce to plain placement.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from vrsjax.parallel.placement import put_global  # noqa: F401 (re-exported: placement is part of this API)
from vrsjax.parallel.rules import RULES, spec


def batch_sharding(mesh: Mesh, global_batch: int, ndim: int = 1, rules: dict = RULES) -> NamedSharding:
    """Rows over the `batch` mesh axes, other dims replicated; raises when the rows do not split evenly."""
    axes = [a for a in rules["batch"] if mesh.shape.get(a, 1) > 1]
    ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if global_batch % ways:
        shown = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
        raise ValueError(
            f"global batch of {global_batch} rows does not split over the {ways} batch shards ({shown}); "
            f"make the batch a multiple of {ways} or change mesh.data / mesh.fsdp"
        )
    return NamedSharding(mesh, spec(("batch",) + ("length",) * (ndim - 1), (global_batch,) + (1,) * (ndim - 1), mesh))


def process_rows(global_batch: int, mesh: Mesh, process_index: int | None = None) -> np.ndarray:
    """int64[rows]: the sorted rows of a `global_batch` batch that `process_index`'s devices hold (default: this
    process). Contiguous for meshes from `make_mesh`; processes that differ only along `tensor` share rows."""
    process_index = jax.process_index() if process_index is None else process_index
    sharding = batch_sharding(mesh, global_batch)
    rows: set[int] = set()
    for device, index in sharding.devices_indices_map((global_batch,)).items():
        if device.process_index == process_index:
            rows.update(range(global_batch)[index[0]])
    return np.array(sorted(rows), np.int64)


def host_local_to_global(local, mesh: Mesh, global_batch: int):
    """A pytree of this process's rows (numpy, leading dim = len(process_rows(global_batch, mesh))) -> the same
    pytree of global jax.Arrays [global_batch, ...] sharded over the batch axes."""

    def one(x):
        x = np.asarray(x)
        sharding = batch_sharding(mesh, global_batch, x.ndim)
        return jax.make_array_from_process_local_data(sharding, x, (global_batch, *x.shape[1:]))

    return jax.tree.map(one, local)


def batch_ways(mesh: Mesh | None, rules: dict = RULES) -> int:
    """How many ways the `batch` rule splits rows on `mesh` (data x fsdp); 1 without a mesh."""
    if mesh is None:
        return 1
    return int(np.prod([mesh.shape.get(a, 1) for a in rules["batch"]]))


def group_copies(groups: int, n: int, ways: int) -> int:
    """Copies of each group's prompt that let `groups` groups of `n` responses split evenly over `ways` batch shards,
    each copy taking n / copies of the responses: 1 when the groups split (or cannot be made to), else
    ways / gcd(groups, ways), which divides n whenever groups * n rows divide over the shards."""
    if groups % ways == 0:
        return 1
    copies = ways // math.gcd(groups, ways)
    return copies if n % copies == 0 else 1


def to_host(x) -> np.ndarray:
    """An array -> numpy holding all of it on every process (gathered across processes when its rows are on
    devices of other processes, as the batch axes place them in a multi-process run)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
