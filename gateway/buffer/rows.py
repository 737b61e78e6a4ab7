"""The buffer's first schema, one SQLite row per reading, read back (a file written before
rows held whole cycles is migrated at open, see legacy.py, or salvaged): pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.models import Quality, Reading

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SELECT_COLUMNS = "id, device, tag, value, quality, ts_us, unit, error"


class DamagedRow(ValueError):
    """A row that does not decode to a reading (a damaged file)."""


def micros(ts: datetime) -> int:
    delta = ts - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_row(row: tuple[Any, ...]) -> Reading:
    """The reading of a row `(id, device, tag, value, quality, ts_us, unit, error)`; a row that
    is not one (a damaged page can hold any bytes) raises DamagedRow."""
    try:
        _, device, tag, value, quality, ts_us, unit, error = row
        return Reading(device=device, tag=tag, value=json.loads(value), quality=Quality(quality),
                       unit=unit, error=error, source_ts=EPOCH + timedelta(microseconds=ts_us))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise DamagedRow(f"row {row[0] if row else '?'}: {type(exc).__name__}") from None
