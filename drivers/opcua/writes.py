"""A command's value as the Variant a node's DataType takes, or the reason it does not fit
(pure: no I/O). Nothing is sent for a refused value: `WriteRefused` is raised first."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from asyncua import ua

from gateway.errors import WriteRefused

V = ua.VariantType
INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    V.SByte: (-(2**7), 2**7 - 1), V.Byte: (0, 2**8 - 1),
    V.Int16: (-(2**15), 2**15 - 1), V.UInt16: (0, 2**16 - 1),
    V.Int32: (-(2**31), 2**31 - 1), V.UInt32: (0, 2**32 - 1),
    V.Int64: (-(2**63), 2**63 - 1), V.UInt64: (0, 2**64 - 1),
}
FLOAT32_MAX = 3.4028234663852886e38
WRITABLE = frozenset({*INTEGER_RANGES, V.Boolean, V.Float, V.Double, V.String, V.DateTime})
# Standard subtypes the wire carries as their base type (OPC UA Part 3/5).
SUBTYPES = {ua.ObjectIds.Duration: V.Double, ua.ObjectIds.UtcTime: V.DateTime,
            ua.ObjectIds.IntegerId: V.UInt32, ua.ObjectIds.Counter: V.UInt32}


def variant_type(data_type: ua.NodeId | None) -> ua.VariantType | None:
    """The built-in type of a node's DataType attribute; None when the gateway cannot write
    it (a structure, an enumeration, a server's own type)."""
    if data_type is None or data_type.NamespaceIndex != 0:
        return None
    ident = data_type.Identifier
    if not isinstance(ident, int):
        return None
    if ident in SUBTYPES:
        return SUBTYPES[ident]
    try:
        vtype = ua.VariantType(ident)  # built-in DataTypes share their ids with VariantType
    except ValueError:
        return None
    return vtype if vtype in WRITABLE else None


def kind(value: object) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    for types, name in ((bool, "boolean"), (int, "integer"), (float, "number"),
                        (str, "string"), (list | tuple, "list"), (dict, "object")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def to_variant(value: object, vtype: ua.VariantType, low: float | None = None,
               high: float | None = None) -> ua.Variant:
    """`value` as a Variant of `vtype`, within the tag's `min`/`max` (`low`/`high`)."""
    if vtype in INTEGER_RANGES:
        converted: object = _integer(value, vtype)
    elif vtype in (V.Float, V.Double):
        converted = _real(value, vtype)
    elif vtype is V.Boolean and isinstance(value, bool):
        converted = value
    elif vtype is V.String and isinstance(value, str):
        converted = value
    elif vtype is V.DateTime and isinstance(value, str):
        converted = _datetime(value)
    else:
        raise WriteRefused(_mismatch(value, vtype))
    if isinstance(converted, int | float) and not isinstance(converted, bool):
        _within(converted, low, high)
    return ua.Variant(converted, vtype)


def _mismatch(value: object, vtype: ua.VariantType) -> str:
    return f"{_a(kind(value))} cannot be written to {_a(vtype.name)} node"


def _a(word: str) -> str:
    """`an Int32`, `an SByte`, `a Double`, `an integer`."""
    return f"{'an' if word[0] in 'aeiouAEIOSU' else 'a'} {word}"


def _integer(value: object, vtype: ua.VariantType) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(_mismatch(value, vtype))
    if isinstance(value, float) and not value.is_integer():
        raise WriteRefused(f"{value!r} is not a whole number (the node is {vtype.name})")
    number = int(value)
    lowest, highest = INTEGER_RANGES[vtype]
    if not lowest <= number <= highest:
        raise WriteRefused(f"{number} is outside the range of {vtype.name} "
                           f"({lowest}..{highest})")
    return number


def _real(value: object, vtype: ua.VariantType) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(_mismatch(value, vtype))
    try:
        number = float(value)
    except OverflowError:  # an int past float's range
        number = math.inf
    if not math.isfinite(number):
        raise WriteRefused(f"{value!r} is not a finite number (the node is {vtype.name})")
    if vtype is V.Float and abs(number) > FLOAT32_MAX:
        raise WriteRefused(f"{value!r} is outside the range of Float (32-bit)")
    return number


def _datetime(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise WriteRefused(f"{text!r} is not an ISO 8601 time (e.g. "
                           "2026-01-02T03:04:05.000000Z)") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _within(number: float, low: float | None, high: float | None) -> None:
    if low is not None and number < low:
        raise WriteRefused(f"{number} is below the tag's min {low}")
    if high is not None and number > high:
        raise WriteRefused(f"{number} is above the tag's max {high}")
