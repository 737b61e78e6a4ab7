"""What a write of one value to one tag puts on the wire (pure): checked, reversed, encoded.

A coil or a `bit` of a status word is written as a state (the bit by read-modify-write, in the
driver); every other tag as the registers `encode_value` makes of its raw value.
"""

from __future__ import annotations

import math

from drivers.modbus.codec import encode_value, unscale
from drivers.modbus.config import ModbusTag
from gateway.errors import WriteRefused


def check_writable(tag: ModbusTag | None, name: str) -> ModbusTag:
    """The tag, if a write to it may be tried."""
    if tag is None:
        raise WriteRefused(f"no tag {name!r} on this device")
    if not tag.writable:
        raise WriteRefused(f"tag {name} is read-only (its config has no writable: true)")
    return tag


def plan_write(tag: ModbusTag, value: object) -> bool | list[int]:
    """The state (coil, bit, bool register) or the registers that write `value` to `tag`.
    Raises WriteRefused with the reason; nothing is written then."""
    if tag.type == "bool":
        if not isinstance(value, bool):
            raise WriteRefused(f"tag {tag.name} takes true or false, not {value!r}")
        return value
    if tag.type == "string":
        if not isinstance(value, str):
            raise WriteRefused(f"tag {tag.name} takes text, not {value!r}")
        return _encode(tag, value)
    number = _number(tag, value)
    raw = _raw(tag, number)
    return _encode(tag, raw)


def _number(tag: ModbusTag, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(f"tag {tag.name} takes a number, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused(f"tag {tag.name} takes a finite number, not {value}")
    if tag.min is not None and value < tag.min:
        raise WriteRefused(f"{value} is below the tag's min {tag.min:g}")
    if tag.max is not None and value > tag.max:
        raise WriteRefused(f"{value} is above the tag's max {tag.max:g}")
    return value


def _raw(tag: ModbusTag, value: float) -> int | float:
    try:
        return unscale(value, tag.scale, tag.offset, tag.type)
    except ValueError as exc:
        scaled = tag.scale != 1 or tag.offset != 0
        raw = f" (raw (value - {tag.offset:g}) / {tag.scale:g})" if scaled else ""
        raise WriteRefused(f"cannot write {value} to {tag.name}{raw}: {exc}") from None


def _encode(tag: ModbusTag, raw: int | float | str) -> list[int]:
    try:
        return encode_value(raw, tag.type, tag.byte_order, tag.word_order, length=tag.length)
    except ValueError as exc:
        raise WriteRefused(f"cannot write {raw!r} to {tag.name}: {exc}") from None
