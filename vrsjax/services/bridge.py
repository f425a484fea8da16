"""DLPack bridge between JAX arrays and torch tensors: zero-copy where the protocol allows, one explicit copy otherwise.

`to_torch` and `to_jax` hand a buffer across without copying when it is on one device, compact (C-contiguous), 64-byte
aligned and of a dtype both sides hold unchanged; otherwise they make one explicit copy first (`copy=None`), always
copy (`copy=True`) or refuse (`copy=False`, BufferError). The result of a zero-copy transfer aliases its source: treat
both as read-only (JAX assumes its buffers never change). On CUDA the DLPack protocol orders the streams: the consumer
passes its stream to `__dlpack__` and the producer makes it wait for pending work, so no explicit synchronization is
needed. torch is imported only when a function runs; a torch call cannot run on traced values inside `jax.jit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    import torch

ALIGNMENT = 64  # bytes; XLA copies (and we refuse to alias) buffers that start off this boundary


def to_torch(array: Any, copy: bool | None = None) -> torch.Tensor:
    """jax.Array or numpy array -> torch.Tensor on the same device, sharing memory when possible.

    A jax.Array sharded over several devices has no single buffer: it is gathered to the host (a copy). copy=True
    always returns a fresh tensor; copy=False raises BufferError instead of copying.
    """
    import torch

    if isinstance(array, torch.Tensor):
        return array.clone() if copy else array
    if isinstance(array, jax.Array):
        shareable = len(array.devices()) == 1 and array.is_fully_addressable
        if not shareable and copy is False:
            raise BufferError(f"a jax.Array on {len(array.devices())} devices has no single buffer to share")
        if not shareable:
            return torch.from_numpy(np.array(array))
        tensor = torch.from_dlpack(array)
        return tensor.clone() if copy else tensor
    host = np.asarray(array)
    # torch.from_numpy aliases any native, writable array with non-negative strides.
    shareable = host.dtype.isnative and host.flags.writeable and min(host.strides, default=0) >= 0
    if not shareable and copy is False:
        raise BufferError(
            f"numpy array (dtype {host.dtype}, strides {host.strides}, read-only or foreign byte order) "
            "cannot be shared without a copy"
        )
    if copy or not shareable:
        host = host.astype(host.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(host)


def to_jax(tensor: torch.Tensor, copy: bool | None = None) -> jax.Array:
    """torch.Tensor (CPU or CUDA) -> jax.Array on the matching device, sharing memory when possible.

    `requires_grad` is dropped (a detach, no copy). A copy is needed for a non-contiguous or misaligned tensor, a
    conjugate/negative view, and 64-bit dtypes while jax_enable_x64 is off: those are cast to their 32-bit JAX dtype
    (int64 -> int32, float64 -> float32) as `jnp.asarray` would. copy=True always copies; copy=False raises
    BufferError instead.
    """
    tensor = tensor.detach()
    target = jax.dtypes.canonicalize_dtype(_numpy_dtype(tensor))
    reasons = _copy_reasons(tensor, target)
    if reasons and copy is False:
        raise BufferError(f"torch tensor cannot be shared with JAX without a copy: {', '.join(reasons)}")
    if reasons or copy:
        tensor = _aligned_copy(tensor.resolve_conj().resolve_neg(), target)
    return jax.dlpack.from_dlpack(tensor)


def data_pointer(value: Any) -> int:
    """The address of the first element of a torch tensor, jax.Array (single device) or numpy array."""
    if isinstance(value, jax.Array):
        return value.unsafe_buffer_pointer()
    if isinstance(value, np.ndarray):
        return value.ctypes.data
    return value.data_ptr()


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    import torch

    if tensor.dtype == torch.bfloat16:
        return np.dtype(jax.numpy.bfloat16)
    return torch.empty((), dtype=tensor.dtype).numpy().dtype


def _copy_reasons(tensor: torch.Tensor, target: np.dtype) -> list[str]:
    reasons = []
    if not tensor.is_contiguous():
        reasons.append(f"strides {tuple(tensor.stride())} are not compact")
    if tensor.numel() and tensor.data_ptr() % ALIGNMENT:
        reasons.append(f"data starts {tensor.data_ptr() % ALIGNMENT} bytes past a {ALIGNMENT}-byte boundary")
    if tensor.is_conj() or tensor.is_neg():
        reasons.append("a lazy conjugate/negative view")
    if target != _numpy_dtype(tensor):
        reasons.append(f"{tensor.dtype} becomes {target} while jax_enable_x64 is off")
    return reasons


def _aligned_copy(tensor: torch.Tensor, target: np.dtype) -> torch.Tensor:
    import torch

    dtype = torch.bfloat16 if target == np.dtype(jax.numpy.bfloat16) else torch.from_numpy(np.empty(0, target)).dtype
    out = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)  # torch's allocators align to >= 64 bytes
    out.copy_(tensor)
    return out
