"""What the views read: device health, the latest reading of every tag, the sinks and the
buffer. The runtime writes it; the status server, the live view and `/api/*` only read it, and
none of them imports the runtime."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram

from gateway.buffer import DurableBuffer
from gateway.config import GatewayConfig
from gateway.kpi.stage import KpiStage
from gateway.models import Reading, trusted_reading
from gateway.sinks import Sink


@dataclass
class DeviceHealth:
    """When a device last answered, and why it did not since."""

    interval: float
    last_ok: float | None = None  # time.monotonic() of the last good read
    error: str | None = None

    def healthy(self, now: float, missed_cycles: int = 3) -> bool:
        return (self.error is None and self.last_ok is not None
                and now - self.last_ok <= missed_cycles * self.interval + 1.0)


RECENT_POINTS = 60
"""Recent values kept per tag for the status page's sparklines (bounded, in memory)."""
RECENT_SPACING = 0.5
"""Seconds of source time a sparkline point at least stands for: a tag polled faster gets a
point every `RECENT_SPACING` (its latest value is still every reading's), so 60 points span at
least 30 s, and the ring costs nothing for most readings of a fast poll (it was most of
`TagState.update`, the largest single cost of 40 x 250 tags at 100 ms: 18% of the gateway's
samples, py-spy)."""

Point = tuple[datetime, float]
Row = tuple[Any, ...]
"""A latest reading as it is kept: (value, quality, source_ts, unit, error, fields set)."""


class LatestReadings(Mapping[tuple[str, str], Reading]):
    """(device, tag) -> the tag's latest reading. Kept per device as a tuple of its fields and
    rebuilt as a `Reading` when read: a Reading held here was 360 bytes a tag (its `__dict__`
    and the model's slots), the tuple is 88 (36 MB at 100,000 tags). The views read it once
    a page refresh; `TagState.update` writes it for every reading."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Row]] = {}

    def __getitem__(self, key: tuple[str, str]) -> Reading:
        device, tag = key
        value, quality, source_ts, unit, error, fields_set = self.devices[device][tag]
        return trusted_reading({"device": device, "tag": tag, "value": value,
                                "quality": quality, "source_ts": source_ts, "unit": unit,
                                "error": error}, fields_set)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for device, rows in self.devices.items():
            for tag in rows:
                yield device, tag

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.devices.values())

    def __contains__(self, key: object) -> bool:
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        rows = self.devices.get(key[0])
        return rows is not None and key[1] in rows

    def clear(self) -> None:
        self.devices.clear()


@dataclass
class TagState:
    """The latest reading of every tag, for the live view and the status API, and the last
    `RECENT_POINTS` numeric values of each (bools as 0/1) for the status page's sparklines.

    `update` runs for every reading that passes the deadband, so it stays tiny (0.77 us a
    reading before it was per device, measured): one tuple stored, and for a number due a
    point (`RECENT_SPACING`) a value and a time written into the tag's ring, an `array` of
    doubles: the count of points written, the base time (epoch seconds), the last point's
    time, the values, and the times as float32 seconds from the base. A deque of (datetime,
    value) tuples cost 6.2 KB a tag once full (a tuple and a float object per point): 62 MB
    at 10,000 tags; an array appended to and cut back every 16 points 1.4 KB; a ring of
    (epoch, value) doubles 1.19 KB; this one 1.06 KB (tracemalloc, key and dict entry
    included). The base moves to the newest time once a
    time is an hour from it, so the last hour's times are within 0.25 ms (what the page
    shows is rounded to 1 ms) and older ones lose precision with their age (about 0.25 s a
    month back), which a sparkline does not show."""

    latest: LatestReadings = field(default_factory=LatestReadings)
    recent: dict[str, dict[str, array[float]]] = field(default_factory=dict)
    """device -> tag -> ring."""

    def update(self, readings: Sequence[Reading]) -> None:
        devices, recent, numbers, size = self.latest.devices, self.recent, _NUMBERS, RECENT_POINTS
        values_at, times_at, rebase_after, pack_time = _VALUES, _TIMES_AT, _REBASE_AFTER, _pack_time
        spacing = RECENT_SPACING - 0.001  # epochs 0.5 s apart may differ by 0.4999998
        last_device, rows, rings = None, {}, {}
        last_ts, epoch = None, 0.0  # a poll's readings share one timestamp: convert it once
        for reading in readings:
            fields = reading.__dict__
            device = fields["device"]
            if device is not last_device:  # a cycle's readings are one device's
                last_device = device
                rows = devices.get(device) or devices.setdefault(device, {})
                rings = recent.get(device) or recent.setdefault(device, {})
            tag, value, ts = fields["tag"], fields["value"], fields["source_ts"]
            rows[tag] = (value, fields["quality"], ts, fields["unit"], fields["error"],
                         reading.__pydantic_fields_set__)
            if type(value) in numbers:
                if ts is not last_ts:
                    last_ts, epoch = ts, ts.timestamp()
                ring = rings.get(tag)
                if ring is None:
                    ring = rings[tag] = array("d", _EMPTY_RING)
                elif 0.0 <= epoch - ring[2] < spacing:  # not yet due (an older time is)
                    continue
                written = ring[0]
                slot = int(written) % size
                try:
                    ring[values_at + slot] = value
                except OverflowError:  # an int past a float's range has no sparkline point
                    continue
                offset = epoch - ring[1]
                if not -rebase_after < offset < rebase_after:
                    _rebase(ring, epoch)
                    offset = 0.0
                pack_time(ring, times_at + 4 * slot, offset)
                ring[0] = written + 1
                ring[2] = epoch

    def points(self, device: str, tag: str) -> list[tuple[float, float]]:
        """The tag's recent (epoch seconds, value) points, oldest first."""
        ring = self.recent.get(device, {}).get(tag)
        if ring is None:
            return []
        written, size, base = int(ring[0]), RECENT_POINTS, ring[1]
        slots = [n % size for n in range(max(0, written - size), written)]
        return [(base + _unpack_time(ring, _TIMES_AT + 4 * slot)[0], ring[_VALUES + slot])
                for slot in slots]

    def history(self, device: str, tag: str) -> list[Point]:
        """The tag's recent numeric values, oldest first ([] for a tag that has none)."""
        return [(datetime.fromtimestamp(t, UTC), v) for t, v in self.points(device, tag)]

    def forget(self, device: str) -> None:
        self.latest.devices.pop(device, None)
        self.recent.pop(device, None)


_VALUES = 3  # ring[0]: points written, ring[1]: the base time, ring[2]: the last point's time
_TIMES_AT = 8 * (_VALUES + RECENT_POINTS)  # byte offset of the float32 times
_EMPTY_RING = array("d", bytes(_TIMES_AT + 4 * RECENT_POINTS))
_EMPTY_RING[2] = -math.inf  # the first point is due whatever its time
_REBASE_AFTER = 3600.0
_pack_time = struct.Struct("=f").pack_into
_unpack_time = struct.Struct("=f").unpack_from


def _rebase(ring: array[float], base: float) -> None:
    """Move the ring's base time to `base`, its stored times with it."""
    shift = ring[1] - base
    for at in range(_TIMES_AT, _TIMES_AT + 4 * RECENT_POINTS, 4):
        _pack_time(ring, at, _unpack_time(ring, at)[0] + shift)
    ring[1] = base
_NUMBERS = frozenset({int, float, bool})


def _read_seconds() -> Histogram:
    return Histogram("gateway_read_seconds", "Duration of one poll of a device", ["device"],
                     registry=None,
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


@dataclass
class GatewayState:
    """The running gateway as the views see it."""

    config: GatewayConfig
    sinks: list[Sink]
    health: dict[str, DeviceHealth] = field(default_factory=dict)
    tags: TagState = field(default_factory=TagState)
    buffer: DurableBuffer | None = None
    read_seconds: Histogram = field(default_factory=_read_seconds)
    kpi: KpiStage | None = None
    """The edge KPIs, when a device has an `oee:` block (`kpi.engine.shift_figures(...)`)."""
