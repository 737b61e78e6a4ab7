"""What the views read: device health, the latest reading of every tag, the sinks and the
buffer. The runtime writes it; the status server, the live view and `/api/*` only read it, and
none of them imports the runtime."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

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
"""Recent values kept per tag for the status page's sparklines (a bounded ring in memory)."""

Point = tuple[datetime, float]


@dataclass
class TagState:
    """The latest reading of every tag, for the live view and the status API, and the last
    `RECENT_POINTS` numeric values of each (bools as 0/1) for the status page's sparklines.

    `update` runs for every reading that passes the deadband, so it stays tiny: one dict store,
    and for a number one tuple appended to a bounded deque (the timestamp is converted only
    when a page asks)."""

    latest: dict[tuple[str, str], Reading] = field(default_factory=dict)
    recent: dict[tuple[str, str], deque[Point]] = field(default_factory=dict)

    def update(self, readings: Sequence[Reading]) -> None:
        latest, recent, numbers = self.latest, self.recent, _NUMBERS
        for reading in readings:
            key = (reading.device, reading.tag)
            latest[key] = reading
            value = reading.value
            if type(value) in numbers:
                try:
                    recent[key].append((reading.source_ts, value))  # type: ignore[arg-type]
                except KeyError:
                    recent[key] = deque([(reading.source_ts, value)],  # type: ignore[list-item]
                                        maxlen=RECENT_POINTS)

    def history(self, device: str, tag: str) -> list[Point]:
        """The tag's recent numeric values, oldest first ([] for a tag that has none)."""
        return list(self.recent.get((device, tag), ()))

    def forget(self, device: str) -> None:
        for key in [key for key in self.latest if key[0] == device]:
            del self.latest[key]
        for key in [key for key in self.recent if key[0] == device]:
            del self.recent[key]


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
