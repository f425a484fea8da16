"""Orbax checkpoints: a model's parameters as a flat {dotted path: array} tree (what the converters write), restored
straight onto a mesh; and what the GRPO trainer's checkpoints need when something goes wrong (a write that fails, a
checkpoint that no longer restores): one `CheckpointError` line naming the step, path and cause, the partial
folder removed, a damaged checkpoint moved aside rather than deleted, and orbax's log noise kept out of the way."""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vrsjax.errors import UserError


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


# ------------------------------------------------------------------------------ failures: one line each, never a hang


class CheckpointError(UserError):
    """A checkpoint could not be written or restored; the message names the step, the path and the cause."""


def cause(error: BaseException) -> str:
    """The innermost cause of `error` on one line ("OSError: [Errno 28] No space left on device: '...'"): orbax
    wraps TensorStore's precise message (OUT_OF_RANGE, NOT_FOUND, ...) in generic ones that dump a whole spec."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"


def move_aside(path: Path) -> Path:
    """Rename the checkpoint folder `path` to `<path>.damaged` (`.damaged.2`, ... if taken): orbax ignores folders
    whose name is not a step, so resume skips it, and nothing is deleted."""
    target, n = path.with_name(f"{path.name}.damaged"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged.{n}")
    path.rename(target)
    return target


def remove_partial(directory: Path, step: int) -> None:
    """Delete the temporary folder(s) of the failed save of `step` (orbax's own `<step>.orbax-checkpoint-tmp*`,
    never a finished checkpoint) so that a clean failure leaves only complete checkpoints behind."""
    for tmp in directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)


def quiet_orbax(quiet: bool = True) -> None:
    """Drop orbax's own log records (one traceback per array and per thread on a full disk or a damaged checkpoint)
    and the reports of never-awaited coroutines its failed reads leave behind; the CheckpointError raised for the
    same failure names the cause once. `quiet=False` (`--debug`) lets them through again."""
    absl = logging.getLogger("absl")
    installed = [f for f in absl.filters if isinstance(f, _OrbaxFilter)]
    if quiet and not installed:
        absl.addFilter(_OrbaxFilter())
        sys.unraisablehook = _OrbaxUnraisable(sys.unraisablehook)
    elif not quiet and installed:
        absl.removeFilter(installed[0])
        if isinstance(sys.unraisablehook, _OrbaxUnraisable):
            sys.unraisablehook = sys.unraisablehook.previous


def _from_orbax(filename: str) -> bool:
    return f"{os.sep}orbax{os.sep}" in filename


class _OrbaxFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _from_orbax(record.pathname)


class _OrbaxUnraisable:
    def __init__(self, previous):
        self.previous = previous

    def __call__(self, unraisable) -> None:
        code = getattr(unraisable.object, "cr_code", None)
        if code is not None and _from_orbax(code.co_filename):
            return  # a read coroutine orbax created and abandoned when another read failed
        if _into_closed_loop(unraisable):
            return
        self.previous(unraisable)


def _into_closed_loop(unraisable) -> bool:
    """True for tensorstore completing one of orbax's abandoned reads after orbax closed the event loop that was
    waiting for it (orbax closes its loop as soon as one read fails; the others still finish on tensorstore's
    threads and hand their result to the closed loop, once per array)."""
    if not isinstance(unraisable.exc_value, RuntimeError) or str(unraisable.exc_value) != "Event loop is closed":
        return False
    frames = [frame.f_code.co_name for frame, _ in traceback.walk_tb(unraisable.exc_traceback)]
    return "call_soon_threadsafe" in frames
