"""Orbax checkpoints. For now: a model's parameters as a flat {dotted path: array} tree (what the converters
write), restored straight onto a mesh. The GRPO trainer's full train state builds on the same functions."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


def save_params(params: dict[str, jax.Array | np.ndarray], directory: str | Path) -> Path:
    """Write {dotted path: array} to `directory` (must not exist); returns it.

    Host numpy arrays are adopted by JAX without a copy where aligned, orbax writes a bounded number of bytes at a
    time, and weights are stored uncompressed (zstd gains little on floats and buffers whole arrays), so saving
    adds almost nothing to memory.
    """
    directory = Path(directory).absolute()
    params = {k: _adopt(v) for k, v in params.items()}
    largest = max((v.nbytes for v in params.values()), default=0)
    limit = max(1, math.ceil(largest / 2**30))
    handler = ocp.PyTreeCheckpointHandler(
        save_concurrent_gb=limit, save_device_host_concurrent_gb=limit, use_compression=False
    )
    with ocp.Checkpointer(handler) as ckptr:
        ckptr.save(directory, args=ocp.args.PyTreeSave(params))
    return directory


def _adopt(x):
    if isinstance(x, np.ndarray):
        try:
            return jax.dlpack.from_dlpack(x)  # zero-copy for aligned, DLPack-supported dtypes
        except Exception:  # e.g. bfloat16 (not a DLPack numpy dtype) or misaligned: copy
            return jnp.asarray(x)
    return x


def restore_params(directory: str | Path, target: dict[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
    """Restore into the shapes, dtypes and shardings of `target` (ShapeDtypeStructs, possibly sharded)."""
    directory = Path(directory).absolute()
    if not directory.exists():
        raise FileNotFoundError(f"{directory}: no orbax parameter checkpoint here")
    with ocp.StandardCheckpointer() as ckptr:
        stored = ckptr.metadata(directory).item_metadata
        missing = sorted(set(target) - set(stored))
        unexpected = sorted(set(stored) - set(target))
        if missing or unexpected:
            raise ValueError(
                f"{directory}: parameters do not match the model config; missing {missing[:20]}, "
                f"unexpected {unexpected[:20]}"
            )
        return ckptr.restore(directory, target)
