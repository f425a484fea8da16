"""DLPack bridge on CPU: zero-copy transfers share the very buffer (pointer identity), the others copy once, explicitly,
and copy=False refuses instead of copying."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vrsjax.services.bridge import data_pointer, to_jax, to_torch

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, jnp.uint8, jnp.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
def test_jax_to_torch_shares_the_buffer(dtype):
    array = (jnp.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    tensor = to_torch(array)
    assert data_pointer(tensor) == data_pointer(array)
    assert tensor.shape == (2, 3, 4)
    np.testing.assert_array_equal(tensor.float().numpy(), np.asarray(array, dtype=np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.uint8, torch.bool])
def test_torch_to_jax_shares_the_buffer(dtype):
    tensor = (torch.arange(24).reshape(4, 6) % 5).to(dtype)
    array = to_jax(tensor)
    assert data_pointer(array) == data_pointer(tensor)
    np.testing.assert_array_equal(np.asarray(array, dtype=np.float32), tensor.float().numpy())


def test_round_trip_keeps_one_buffer():
    tensor = torch.randn(8, 16)
    back = to_torch(to_jax(tensor))
    assert data_pointer(back) == data_pointer(tensor)


def test_requires_grad_is_detached_not_copied():
    tensor = torch.randn(4, 4, requires_grad=True)
    assert data_pointer(to_jax(tensor, copy=False)) == data_pointer(tensor)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: torch.arange(12.0).reshape(3, 4).t(), "not compact"),
        (lambda: torch.arange(40, dtype=torch.float32)[1:13], "past a 64-byte boundary"),
        (lambda: torch.arange(12, dtype=torch.int64), "becomes int32"),
        (lambda: torch.arange(12, dtype=torch.float64), "becomes float32"),
        (lambda: torch.randn(3, dtype=torch.complex64).conj(), "conjugate"),
    ],
)
def test_torch_to_jax_copies_explicitly_when_it_must(make, reason):
    tensor = make()
    with pytest.raises(BufferError, match=reason):
        to_jax(tensor, copy=False)
    array = to_jax(tensor)
    assert data_pointer(array) != data_pointer(tensor)
    assert data_pointer(array) % 64 == 0
    np.testing.assert_array_equal(np.asarray(array), tensor.resolve_conj().numpy().astype(np.asarray(array).dtype))


def test_copy_true_always_copies():
    tensor = torch.randn(5, 3)
    array = to_jax(tensor, copy=True)
    assert data_pointer(array) != data_pointer(tensor)
    back = to_torch(array, copy=True)
    assert data_pointer(back) != data_pointer(array)
    np.testing.assert_array_equal(back.numpy(), tensor.numpy())


def test_sharded_jax_array_is_gathered_by_copy():
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    array = jax.device_put(jnp.arange(16.0).reshape(8, 2), NamedSharding(mesh, PartitionSpec("data")))
    with pytest.raises(BufferError, match="2 devices"):
        to_torch(array, copy=False)
    np.testing.assert_array_equal(to_torch(array).numpy(), np.arange(16.0).reshape(8, 2))


def test_numpy_to_torch():
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert data_pointer(to_torch(host)) == data_pointer(host)
    assert data_pointer(to_torch(host[:, ::2])) == data_pointer(host)  # any non-negative strides alias
    frozen = host.copy()
    frozen.flags.writeable = False
    with pytest.raises(BufferError, match="read-only"):
        to_torch(frozen, copy=False)
    copied = to_torch(frozen)
    assert data_pointer(copied) != data_pointer(frozen)
    np.testing.assert_array_equal(copied.numpy(), host)
    swapped = host.astype(">f4")
    np.testing.assert_array_equal(to_torch(swapped).numpy(), host)


def test_empty_tensors():
    assert to_jax(torch.empty(0, 3)).shape == (0, 3)
    assert tuple(to_torch(jnp.zeros((2, 0))).shape) == (2, 0)
