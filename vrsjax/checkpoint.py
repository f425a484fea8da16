"""Orbax checkpoints. For now: a model's parameters as a flat {dotted path: array} tree (what the converters
write), restored straight onto a mesh. The GRPO trainer's full train state builds on the same functions."""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


def save_params(params: dict[str, jax.Array], directory: str | Path) -> Path:
    """Write {dotted path: array} to `directory` (must not exist); returns it."""
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, params)
    return directory


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
