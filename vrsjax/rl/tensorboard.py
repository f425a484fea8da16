"""A TensorBoard scalar writer with no dependency: event files written directly.

An event file is a sequence of TFRecords (uint64 length, masked CRC-32C of the length, the bytes, masked CRC-32C of
the bytes) holding `Event` protocol buffers: first one with `file_version = "brain.Event:2"`, then one per step with
a `Summary` of `{tag, simple_value}` values. Those few protobuf fields are encoded by hand here, so training logs to
TensorBoard without TensorFlow, torch or tensorboardX (which imports torch when it is installed). TensorBoard reads
the directory: `tensorboard --logdir RUN_DIR/tensorboard`.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

_CRC_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1  # CRC-32C (Castagnoli), reflected
    _CRC_TABLE.append(_crc)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masking: rotate right by 15 and add a constant (mod 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2) + _varint(len(data)) + data


def event_bytes(wall_time: float, step: int, *, scalars: dict[str, float] | None = None, version: str = "") -> bytes:
    """Event{wall_time=1 (double), step=2 (int64), file_version=3 | summary=5 {value=1 {tag=1, simple_value=2}}}."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if version:
        out += _bytes_field(3, version.encode())
    if scalars:
        values = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(value)))
            for tag, value in scalars.items()
        )
        out += _bytes_field(5, values)
    return out


def record_bytes(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class SummaryWriter:
    """Scalars per step into `log_dir/events.out.tfevents.<time>.<host>`; flushed after every `add_scalars`."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._file = self.path.open("ab")
        self._file.write(record_bytes(event_bytes(time.time(), 0, version="brain.Event:2")))
        self._file.flush()

    def add_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Every number in `scalars` (strings, bools and None are skipped) as one event at `step`."""
        numbers = {k: float(v) for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            self._file.write(record_bytes(event_bytes(time.time(), step, scalars=numbers)))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_scalars(path: str | Path) -> list[tuple[int, dict[str, float]]]:
    """(step, {tag: value}) per scalar event of one event file, checking every CRC: for tests and quick looks."""
    out = []
    for body in _records(Path(path), strict=True):
        step, scalars = _parse_event(body)
        if scalars:
            out.append((step, scalars))
    return out


def keep_until(log_dir: str | Path, step: int) -> int:
    """Rewrite every event file in `log_dir` without the scalar events of steps after `step` (and without a record
    torn by a kill), atomically per file: a resumed run logs those steps again, and TensorBoard would otherwise
    show two values per step. Returns how many events were dropped."""
    dropped = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        if path.name.endswith(".tmp"):
            continue
        bodies = list(_records(path, strict=False))
        kept = [b for b in bodies if _kept(_parse_event(b), step)]
        if len(kept) == len(bodies) and sum(16 + len(b) for b in bodies) == path.stat().st_size:
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(record_bytes(b) for b in kept))
        os.replace(tmp, path)
        dropped += len(bodies) - len(kept)
    return dropped


def _kept(event: tuple[int, dict[str, float]], step: int) -> bool:
    """The file_version event stays; scalar events stay up to `step`."""
    return not event[1] or event[0] <= step


def _records(path: Path, strict: bool):
    """The event bodies of one file; a bad CRC or a torn record raises when `strict`, else ends the file there."""
    data, pos = path.read_bytes(), 0
    while pos < len(data):
        try:
            (length,) = struct.unpack_from("<Q", data, pos)
            if struct.unpack_from("<I", data, pos + 8)[0] != masked_crc32c(data[pos : pos + 8]):
                raise ValueError(f"{path}: bad length CRC at byte {pos}")
            body = data[pos + 12 : pos + 12 + length]
            (crc,) = struct.unpack_from("<I", data, pos + 12 + length)
            if len(body) != length or crc != masked_crc32c(body):
                raise ValueError(f"{path}: bad data CRC at byte {pos}")
        except (ValueError, struct.error):
            if strict:
                raise
            return
        pos += 16 + length
        yield body


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        yield number, wire, value


def _parse_event(body: bytes) -> tuple[int, dict[str, float]]:
    step, scalars = 0, {}
    for number, _, value in _fields(body):
        if number == 2:
            step = value
        elif number == 5:
            for _, _, item in _fields(value):
                parts = {n: v for n, _, v in _fields(item)}
                if 2 in parts:
                    scalars[parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    return step, scalars
