"""The reward server's wire format: exact round trips of arrays and JSON values, 64-byte aligned buffers, and every
malformed message a WireError (never another exception, never a pickle)."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrsjax.services import wire

DTYPES = sorted(wire.DTYPES)


def sample_tree():
    rng = np.random.default_rng(0)
    return {
        "frames": rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8),
        "jobs": [{"keyframe": 2, "boxes": rng.normal(size=(2, 4))}, {"keyframe": 0, "boxes": None}],
        "masks": [np.packbits(rng.random((2, 3, 9)) > 0.5), np.zeros((0, 4), np.float32)],
        "meta": {"name": "ü", "ok": True, "n": np.int64(7), "x": np.float32(0.5), "nested": [[1, 2], []]},
        "scalar": np.array(3.5),
    }


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip():
    tree = sample_tree()
    decoded = wire.decode(wire.encode(tree))
    expected = {**tree, "meta": {**tree["meta"], "n": 7, "x": 0.5}}
    assert_same(decoded, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips(dtype):
    array = (np.arange(30) % 3).astype(dtype).reshape(2, 3, 5)
    assert_same(wire.decode(wire.encode({"a": array, "b": array[:, ::2]})), {"a": array, "b": array[:, ::2]})


def test_buffers_start_on_64_byte_boundaries_and_are_read_only():
    data = wire.encode({"a": np.ones(3, np.uint8), "b": np.ones((4, 4), np.float64), "c": np.ones(5, np.int16)})
    base = np.frombuffer(data, np.uint8).ctypes.data
    decoded = wire.decode(data)
    for array in decoded.values():
        assert (array.ctypes.data - base) % 64 == 0
        assert not array.flags.writeable


def test_big_endian_is_sent_little_endian():
    array = np.arange(6, dtype=">i4")
    np.testing.assert_array_equal(wire.decode(wire.encode(array)), np.arange(6))


@pytest.mark.parametrize(
    "value",
    [np.array([object()]), np.array(["a"]), {1: "x"}, {"__array__": 0}, {1.5}, object(), b"bytes"],
)
def test_unsendable_values_are_refused(value):
    with pytest.raises(TypeError):
        wire.encode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"NOTMAGIC" + bytes(16),
        pickle.dumps({"a": 1}),
        wire.MAGIC + (10**9).to_bytes(8, "little") + b"{}",
        wire.MAGIC + (2).to_bytes(8, "little") + b"[]",
        wire.MAGIC + (2).to_bytes(8, "little") + b"{]",
    ],
)
def test_malformed_messages_raise_wire_error(data):
    with pytest.raises(wire.WireError):
        wire.decode(data)


def forge(header: bytes, payload: bytes = b"") -> bytes:
    size = len(wire.MAGIC) + 8 + len(header)
    return wire.MAGIC + len(header).to_bytes(8, "little") + header + bytes(-size % 64) + payload


@pytest.mark.parametrize(
    "header",
    [
        b'{"tree": {"__array__": 0}, "arrays": [{"dtype": "object", "shape": [1], "offset": 0, "nbytes": 8}]}',
        b'{"tree": {"__array__": 0}, "arrays": [{"dtype": "uint8", "shape": [9], "offset": 0, "nbytes": 9}]}',
        b'{"tree": {"__array__": 0}, "arrays": [{"dtype": "uint8", "shape": [2], "offset": 0, "nbytes": 3}]}',
        b'{"tree": {"__array__": 0}, "arrays": [{"dtype": "uint8", "shape": [-1], "offset": 0, "nbytes": 1}]}',
        b'{"tree": {"__array__": 3}, "arrays": []}',
        b'{"tree": {"__array__": "0"}, "arrays": []}',
        b'{"tree": 1, "arrays": 5}',
        b'{"tree": 1, "arrays": [7]}',
        b'{"tree": 1}',
    ],
)
def test_forged_headers_raise_wire_error(header):
    with pytest.raises(wire.WireError):
        wire.decode(forge(header, bytes(8)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_messages_never_raise_anything_but_wire_error(data):
    message = bytearray(wire.encode(sample_tree()))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(message) - 1))
        message[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(message)))
    try:
        wire.decode(bytes(message[:cut]))
    except wire.WireError:
        pass


def test_deep_nesting_is_a_wire_error():
    with pytest.raises(wire.WireError):
        wire.decode(forge(b'{"tree": ' + b"[" * 100000 + b"]" * 100000 + b', "arrays": []}'))
