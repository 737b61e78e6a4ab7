"""A batch of readings as one buffer row and back: pure functions, no file and no clock.

The buffer stores one row per append (the readings of one event loop pass: a device poll, or
several), split into rows of at most ROW_READINGS. A row holds consecutive sequence numbers
`last_seq - count + 1 ... last_seq`; cursors count readings, not rows. One row per reading
made SQLite's append and read-back most of the buffer's cost (issue 18, profiled).

The row's blob is a format byte and JSON (orjson writes and reads it; the stdlib encoder only
for what orjson cannot write the same: NaN and infinities, which it turns into null, integers
beyond 64 bits and lone surrogates) of six columns:

    [runs, tags, values, qualities, units, errors]

`runs` is a flat list `[device, ts_us, n, ...]` of consecutive readings that share their device
and source timestamp (a poll's readings do); `qualities`, `units` and `errors` are null when
every reading has the default (good, no unit, no error).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import orjson

from gateway.buffer.rows import EPOCH, DamagedRow, micros
from gateway.models import ALL_FIELDS, Quality, Reading, trusted_reading

ROW_READINGS = 1000  # readings per row at most: a sink that reads part of a row decodes it all
_ORJSON = b"\x01"
_STDLIB = b"\x02"
_GOOD = Quality.GOOD
_QUALITY_TEXT = {quality: quality.value for quality in Quality}  # Enum.value is slow
_QUALITY_OF = {quality.value: quality for quality in Quality}
_SCALARS = frozenset({bool, int, float, str, type(None)})

StoredCycle = tuple[int, int, int, bytes]  # last_seq, count, ts_us (the earliest), data


def encode_cycle(readings: Sequence[Reading]) -> tuple[int, bytes]:
    """The earliest source timestamp (microseconds) of `readings` and their blob."""
    runs: list[object] = []
    earliest: int | None = None
    last_device: str | None = None
    last_ts: datetime | None = None
    run = 0
    rows = [r.__dict__ for r in readings]  # dict lookups: a fifth less time than attributes
    for fields in rows:
        if fields["source_ts"] is not last_ts or fields["device"] != last_device:
            if run:
                runs.append(run)
            last_device, last_ts, run = fields["device"], fields["source_ts"], 0
            ts_us = micros(last_ts)
            earliest = ts_us if earliest is None or ts_us < earliest else earliest
            runs += (last_device, ts_us)
        run += 1
    runs.append(run)
    values = [fields["value"] for fields in rows]
    qualities = [fields["quality"] for fields in rows]
    units = [fields["unit"] for fields in rows]
    errors = [fields["error"] for fields in rows]
    columns = [runs, [fields["tag"] for fields in rows], values,
               None if qualities.count(_GOOD) == len(qualities)
               else [_QUALITY_TEXT[q] for q in qualities],
               None if units.count(None) == len(units) else units,
               None if errors.count(None) == len(errors) else errors]
    return earliest or 0, _dumps(columns, values)


def _dumps(columns: list[Any], values: Sequence[object]) -> bytes:
    if not _has_non_finite(values):
        try:
            return _ORJSON + orjson.dumps(columns)
        except orjson.JSONEncodeError:  # an int beyond 64 bits, a lone surrogate
            pass
    return _STDLIB + json.dumps(columns, separators=(",", ":")).encode()


def _has_non_finite(values: Sequence[object]) -> bool:
    """NaN or an infinity anywhere (orjson would write null)."""
    for value in values:
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # type: ignore[operator]  # inf - inf and NaN are NaN
                return True
        elif kind is tuple and _has_non_finite(cast(tuple[object, ...], value)):
            return True
    return False


def decode_cycle(data: bytes, count: int) -> list[Reading]:
    """The `count` readings of a blob; anything else (a damaged page can hold any bytes)
    raises DamagedRow."""
    try:
        columns = _loads(data)
        runs, tags, values, qualities, units, errors = columns
        if not (len(tags) == len(values) == count
                and all(c is None or len(c) == count for c in (qualities, units, errors))):
            raise ValueError("columns of unequal length")
        return _readings(runs, tags, values, qualities, units, errors, count)
    except DamagedRow:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise DamagedRow(type(exc).__name__) from None


def _loads(data: bytes) -> Any:
    if type(data) is not bytes or not data:
        raise ValueError("not a blob")
    view = memoryview(data)[1:]
    if data[:1] == _ORJSON:
        return orjson.loads(view)
    if data[:1] == _STDLIB:
        return json.loads(bytes(view))
    raise ValueError("unknown format")


def _readings(runs: list[Any], tags: list[Any], values: list[Any], qualities: list[Any] | None,
              units: list[Any] | None, errors: list[Any] | None, count: int) -> list[Reading]:
    quality_of = [_GOOD] * count if qualities is None else [_QUALITY_OF[q] for q in qualities]
    unit_of = [None] * count if units is None else units
    error_of = [None] * count if errors is None else errors
    exact = _all_exact(tags, values, unit_of, error_of)
    out: list[Reading] = []
    index = 0
    for start in range(0, len(runs), 3):
        device, ts_us, n = runs[start:start + 3]
        if type(device) is not str or type(n) is not int or n < 1 or index + n > count:
            raise ValueError("bad run")
        ts = EPOCH + timedelta(microseconds=ts_us)
        if exact:
            out += _built(device, ts, tags, values, quality_of, unit_of, error_of, index, n)
        else:
            out += [Reading(device=device, tag=tags[i], value=values[i], quality=quality_of[i],
                            source_ts=ts, unit=unit_of[i], error=error_of[i])
                    for i in range(index, index + n)]
        index += n
    if index != count:
        raise ValueError("runs do not cover the row")
    return out


def _all_exact(tags: list[Any], values: list[Any], units: list[Any], errors: list[Any]) -> bool:
    """Whether every field has the exact type a Reading holds (then validation would change
    nothing); an array (a JSON list, a tuple in a Reading) or a damaged field is validated."""
    return (all(type(t) is str for t in tags) and all(type(v) in _SCALARS for v in values)
            and all(u is None or type(u) is str for u in units)
            and all(e is None or type(e) is str for e in errors))


def _built(device: str, ts: datetime, tags: list[Any], values: list[Any],
           qualities: list[Quality], units: list[Any], errors: list[Any], index: int,
           n: int) -> list[Reading]:
    """The readings `index ... index + n - 1` of one run, built without validation (the same
    as `Reading(...)` for exact types, see models.good_reading: about half the cost)."""
    return [trusted_reading({"device": device, "tag": tags[i], "value": values[i],
                             "quality": qualities[i], "source_ts": ts, "unit": units[i],
                             "error": errors[i]}, ALL_FIELDS)
            for i in range(index, index + n)]


def device_counts(data: bytes, count: int, skip: int = 0) -> dict[str, tuple[int, int, int]]:
    """Per device in a row, from its `skip`-th reading on: (readings, not good, the newest
    source timestamp in microseconds), without building readings (`gateway status`). A blob
    that does not decode raises DamagedRow."""
    try:
        runs, _, _, qualities, _, _ = _loads(data)
        summary: dict[str, tuple[int, int, int]] = {}
        index = 0
        for start in range(0, len(runs), 3):
            device, ts_us, n = runs[start:start + 3]
            first = max(index, skip)
            index += n
            if first >= index:
                continue
            bad = 0 if qualities is None else sum(q != "good" for q in qualities[first:index])
            had, had_bad, newest = summary.get(device, (0, 0, ts_us))
            summary[device] = (had + index - first, had_bad + bad, max(newest, ts_us))
        if index != count:
            raise ValueError("runs do not cover the row")
        return summary
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise DamagedRow(type(exc).__name__) from None


def split_rows(first_seq: int, readings: Sequence[Reading]) -> list[StoredCycle]:
    """The rows of `readings` numbered from `first_seq`, ROW_READINGS at most each."""
    rows = []
    for start in range(0, len(readings), ROW_READINGS):
        chunk = readings[start:start + ROW_READINGS]
        ts_us, data = encode_cycle(chunk)
        rows.append((first_seq + start + len(chunk) - 1, len(chunk), ts_us, data))
    return rows
