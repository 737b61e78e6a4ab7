"""What the views read: device health, the latest reading of every tag, the sinks and the
buffer. The runtime writes it; the status server, the live view and `/api/*` only read it, and
none of them imports the runtime."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Histogram

from gateway.buffer import DurableBuffer
from gateway.config import GatewayConfig
from gateway.kpi.stage import KpiStage
from gateway.models import Reading
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

Point = tuple[datetime, float]


@dataclass
class TagState:
    """The latest reading of every tag, for the live view and the status API, and the last
    `RECENT_POINTS` numeric values of each (bools as 0/1) for the status page's sparklines.

    `update` runs for every reading that passes the deadband, so it stays tiny: one dict store,
    and for a number two floats written into the tag's ring, an `array` of the points written
    so far and then (epoch seconds, value) pairs. A deque of (datetime, value) tuples cost
    6.2 KB a tag once full (a tuple and a float object per point): 62 MB at 10,000 tags; an
    array appended to and cut back every 16 points 1.4 KB; the ring, allocated once at its
    size, 1.0 KB (measured with tracemalloc, key and dict entry included: 1.37 and 1.14 KB)."""

    latest: dict[tuple[str, str], Reading] = field(default_factory=dict)
    recent: dict[tuple[str, str], array[float]] = field(default_factory=dict)

    def update(self, readings: Sequence[Reading]) -> None:
        latest, recent, numbers, size = self.latest, self.recent, _NUMBERS, RECENT_POINTS
        last_ts, epoch = None, 0.0  # a poll's readings share one timestamp: convert it once
        for reading in readings:
            key = (reading.device, reading.tag)
            latest[key] = reading
            value = reading.value
            if type(value) in numbers:
                ts = reading.source_ts
                if ts is not last_ts:
                    last_ts, epoch = ts, ts.timestamp()
                ring = recent.get(key)
                if ring is None:
                    ring = recent[key] = array("d", _EMPTY_RING)
                written = ring[0]
                slot = 1 + 2 * (int(written) % size)
                try:
                    ring[slot + 1] = value  # type: ignore[assignment]
                except OverflowError:  # an int past a float's range has no sparkline point
                    continue
                ring[slot] = epoch
                ring[0] = written + 1

    def points(self, device: str, tag: str) -> list[tuple[float, float]]:
        """The tag's recent (epoch seconds, value) points, oldest first."""
        ring = self.recent.get((device, tag))
        if ring is None:
            return []
        written, size = int(ring[0]), RECENT_POINTS
        slots = [1 + 2 * (n % size) for n in range(max(0, written - size), written)]
        return [(ring[slot], ring[slot + 1]) for slot in slots]

    def history(self, device: str, tag: str) -> list[Point]:
        """The tag's recent numeric values, oldest first ([] for a tag that has none)."""
        return [(datetime.fromtimestamp(t, UTC), v) for t, v in self.points(device, tag)]

    def forget(self, device: str) -> None:
        for key in [key for key in self.latest if key[0] == device]:
            del self.latest[key]
        for key in [key for key in self.recent if key[0] == device]:
            del self.recent[key]


_EMPTY_RING = array("d", bytes(8 * (1 + 2 * RECENT_POINTS)))
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
