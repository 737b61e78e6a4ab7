"""The simulator's own value -> registers encoder. Deliberately independent of the gateway's
codec (drivers/modbus/codec.py), so that the end-to-end tests cross-check two implementations."""

from __future__ import annotations

import struct

FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "uint64": "Q", "float32": "f", "float64": "d"}


def to_registers(value: object, data_type: str, byte_order: str = "big",
                 word_order: str = "big", length: int | None = None) -> list[int]:
    if data_type == "bool":
        return [1 if value else 0]
    if data_type == "string":
        raw = str(value).encode("ascii")[: 2 * (length or 1)].ljust(2 * (length or 1), b"\0")
    else:
        raw = struct.pack(">" + FORMATS[data_type], value)
    # Split big-endian bytes into 16-bit words, most significant first.
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little" and data_type != "string":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def from_registers(registers: list[int], data_type: str, byte_order: str = "big",
                   word_order: str = "big") -> int | float:
    """The number `to_registers` made these registers from (numeric types only): what a
    client wrote to a setpoint register, as the machine model takes it."""
    words = [r.to_bytes(2, "big") for r in registers]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    value: int | float = struct.unpack(">" + FORMATS[data_type], b"".join(words))[0]
    return value
