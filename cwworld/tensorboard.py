"""TensorBoard scalar event files, written without TensorFlow or the tensorboard package.

An event file is a TFRecord stream: each record is
``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
(little-endian), and each ``data`` is a serialized ``tensorboard.Event`` protobuf.
Only the fields scalars need are written (hand-encoded protobuf):

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

``tensorboard --logdir RUN_DIR`` reads these files; :func:`read_scalars` reads
them back here (checking every CRC) for tests and scripts.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Union


def _make_crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields encode negatives as 10-byte two's complement
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int = 0, file_version: str = None, scalars: dict = None) -> bytes:
    data = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step:
        data += _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        data += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        data += _length_delimited(5, values)
    return data


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


class EventWriter:
    """Appends scalar summaries to a new event file in ``log_dir`` (one file per writer).

    >>> with EventWriter("runs/x") as tb:
    ...     tb.scalars(100, {"loss": 1.5, "kl/0": 0.2})
    """

    def __init__(self, log_dir: Union[str, os.PathLike]):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{time.monotonic_ns()}"
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")
        self._file.write(_record(_event(time.time(), file_version="brain.Event:2")))
        self._file.flush()

    def scalars(self, step: int, values: dict, wall_time: float = None) -> None:
        """Write ``{tag: float}`` at ``step`` and flush (so a killed run loses nothing logged)."""
        values = {tag: float(v) for tag, v in values.items()}
        self._file.write(_record(_event(time.time() if wall_time is None else wall_time, step, scalars=values)))
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- reading back -------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(data: bytes):
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def read_records(path: Union[str, os.PathLike]) -> list[bytes]:
    """The records of one event file; a truncated last record (a killed writer) is dropped,
    a CRC mismatch is an error naming the file and the record."""
    path = Path(path)
    raw = path.read_bytes()
    records, pos = [], 0
    while pos + 12 <= len(raw):
        header = raw[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[pos + 8 : pos + 12])
        if header_crc != _masked_crc(header):
            raise ValueError(f"{path}: record {len(records)}: length CRC mismatch")
        end = pos + 12 + length + 4
        if end > len(raw):
            break
        data = raw[pos + 12 : pos + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[end - 4 : end])
        if data_crc != _masked_crc(data):
            raise ValueError(f"{path}: record {len(records)}: data CRC mismatch")
        records.append(data)
        pos = end
    return records


def read_scalars(log_dir: Union[str, os.PathLike]) -> dict[str, list[tuple[int, float]]]:
    """All scalars in the event files of ``log_dir``: ``{tag: [(step, value), ...]}`` in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for record in read_records(path):
            step = 0
            summaries = []
            for field, value in _fields(record):
                if field == 2:
                    step = value
                elif field == 5:
                    summaries.append(value)
            for summary in summaries:
                for field, value in _fields(summary):
                    if field != 1:
                        continue
                    tag, number = None, None
                    for f, v in _fields(value):
                        if f == 1:
                            tag = v.decode()
                        elif f == 2:
                            (number,) = struct.unpack("<f", v)
                    if tag is not None and number is not None:
                        out.setdefault(tag, []).append((step, number))
    return out
