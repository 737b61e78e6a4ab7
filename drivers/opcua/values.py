"""Pure conversion of an OPC UA DataValue into a Reading."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from gateway.models import Quality, Reading, Value, iso_z, utc_now

Scalar = bool | int | float | str | None


def to_value(value: Any) -> Value:
    """A one-dimensional array becomes a tuple of scalars; a matrix (nested lists) keeps its
    rows as JSON strings, since Reading holds one level of array only."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return _plain(value)


def _plain(value: Any) -> Scalar:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return json.dumps([_plain(v) for v in value])
    if isinstance(value, datetime):  # the format of every payload's `ts`
        return iso_z(_aware(value).astimezone(UTC))
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, ua.LocalizedText):
        return value.Text
    return str(value)


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def quality_of(status: ua.StatusCode | None) -> Quality:
    code = 0 if status is None else status.value
    severity = code >> 30
    return {0: Quality.GOOD, 1: Quality.UNCERTAIN}.get(severity, Quality.BAD)


def to_reading(device: str, tag: str, dv: ua.DataValue, unit: str | None) -> Reading:
    quality = quality_of(dv.StatusCode)
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    value = None if quality is Quality.BAD or dv.Value is None else to_value(dv.Value.Value)
    error = None if quality is Quality.GOOD or dv.StatusCode is None else dv.StatusCode.name
    return Reading(device=device, tag=tag, value=value, quality=quality,
                   source_ts=_aware(ts) if ts else utc_now(), unit=unit, error=error)
