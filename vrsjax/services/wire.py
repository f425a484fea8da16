"""Binary wire format of the reward server: a JSON tree whose numpy arrays travel as raw little-endian buffers.

Layout: the 8-byte magic `VRSJAX01`, the header length as a little-endian uint64, the UTF-8 JSON header, then the
array buffers, each starting on a 64-byte boundary. The header is `{"tree": ..., "arrays": [{"dtype", "shape",
"offset", "nbytes"}, ...]}` where each array in the tree is replaced by `{"__array__": index}`. Decoding checks the
magic, the dtypes (plain numeric and bool only), the shapes against the sizes and every offset against the payload,
and never unpickles anything: a malformed message raises `WireError`.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

MAGIC = b"VRSJAX01"
ALIGNMENT = 64
DTYPES = frozenset(
    ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"]
)
_LENGTH = struct.Struct("<Q")
_ARRAY_KEY = "__array__"


class WireError(ValueError):
    """A message that is not a valid encoding (bad magic, header, dtype, shape or offset)."""


def encode(tree: Any) -> bytes:
    """A tree of dicts (str keys), lists/tuples, str, int, float, bool, None, numpy arrays and scalars -> bytes."""
    arrays: list[np.ndarray] = []
    header_tree = _strip_arrays(tree, arrays)
    specs, offset = [], 0
    for array in arrays:
        offset = _aligned(offset)
        specs.append({"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset, "nbytes": array.nbytes})
        offset += array.nbytes
    header = json.dumps({"tree": header_tree, "arrays": specs}, separators=(",", ":")).encode()
    start = _aligned(len(MAGIC) + _LENGTH.size + len(header))
    out = bytearray(start + offset)
    out[: len(MAGIC)] = MAGIC
    out[len(MAGIC) : len(MAGIC) + _LENGTH.size] = _LENGTH.pack(len(header))
    out[len(MAGIC) + _LENGTH.size : len(MAGIC) + _LENGTH.size + len(header)] = header
    for spec, array in zip(specs, arrays, strict=True):
        out[start + spec["offset"] : start + spec["offset"] + spec["nbytes"]] = array.tobytes()
    return bytes(out)


def decode(data: bytes | bytearray | memoryview) -> Any:
    """bytes from `encode` -> the tree, arrays as read-only numpy views into `data`. Raises WireError."""
    view = memoryview(data).cast("B")
    prefix = len(MAGIC) + _LENGTH.size
    if len(view) < prefix or bytes(view[: len(MAGIC)]) != MAGIC:
        raise WireError(f"not a vrsjax wire message: expected magic {MAGIC!r}")
    (header_size,) = _LENGTH.unpack(view[len(MAGIC) : prefix])
    if header_size > len(view) - prefix:
        raise WireError(f"header of {header_size} bytes overruns a {len(view)}-byte message")
    try:
        header = json.loads(bytes(view[prefix : prefix + header_size]))
        specs, tree = header["arrays"], header["tree"]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise WireError(f"unreadable header: {error!r}") from error
    if not isinstance(specs, list):
        raise WireError(f"header 'arrays' must be a list, got {type(specs).__name__}")
    payload = view[_aligned(prefix + header_size) :]
    arrays = [_array(spec, payload, index) for index, spec in enumerate(specs)]
    try:
        return _restore_arrays(tree, arrays)
    except RecursionError as error:
        raise WireError("header tree nested too deeply") from error


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _strip_arrays(node: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(node, np.ndarray):
        if node.dtype.name not in DTYPES:
            raise TypeError(f"cannot send a {node.dtype} array; supported dtypes: {', '.join(sorted(DTYPES))}")
        arrays.append(node.astype(node.dtype.newbyteorder("<"), order="C", copy=False))  # keeps 0-d arrays 0-d
        return {_ARRAY_KEY: len(arrays) - 1}
    if isinstance(node, np.generic):
        return node.item()
    if isinstance(node, dict):
        if _ARRAY_KEY in node or not all(isinstance(key, str) for key in node):
            raise TypeError(f"dict keys must be strings other than {_ARRAY_KEY!r}, got {list(node)[:5]}")
        return {key: _strip_arrays(value, arrays) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_strip_arrays(value, arrays) for value in node]
    if node is None or isinstance(node, str | int | float | bool):
        return node
    raise TypeError(f"cannot send a {type(node).__name__}; use arrays, numbers, strings, lists and dicts")


def _array(spec: Any, payload: memoryview, index: int) -> np.ndarray:
    try:
        dtype, shape, offset, nbytes = spec["dtype"], tuple(spec["shape"]), spec["offset"], spec["nbytes"]
    except (KeyError, TypeError) as error:
        raise WireError(f"array {index}: malformed spec {spec!r}") from error
    if dtype not in DTYPES:
        raise WireError(f"array {index}: dtype {dtype!r} is not allowed")
    if not all(isinstance(n, int) and n >= 0 for n in (*shape, offset, nbytes)):
        raise WireError(f"array {index}: shape, offset and size must be non-negative integers, got {spec!r}")
    item = np.dtype(dtype).newbyteorder("<")
    if math.prod(shape) * item.itemsize != nbytes or offset + nbytes > len(payload):
        raise WireError(f"array {index}: shape {shape} of {dtype} does not fit {nbytes} bytes at offset {offset}")
    return np.frombuffer(payload, dtype=item, count=math.prod(shape), offset=offset).reshape(shape)


def _restore_arrays(node: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(node, dict):
        if set(node) == {_ARRAY_KEY}:
            index = node[_ARRAY_KEY]
            if not isinstance(index, int) or not 0 <= index < len(arrays):
                raise WireError(f"array reference {index!r} out of range")
            return arrays[index]
        return {key: _restore_arrays(value, arrays) for key, value in node.items()}
    if isinstance(node, list):
        return [_restore_arrays(value, arrays) for value in node]
    return node
