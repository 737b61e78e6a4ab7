"""Sinks deliver buffered readings to the outside world (MQTT broker, InfluxDB)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.models import Reading


@dataclass(frozen=True)
class DeviceContext:
    """What a sink knows about a device besides its readings (from the config)."""

    gateway: str
    site: str
    area: str
    line: str
    device: str


class Sink(ABC):
    """Delivers batches of readings.

    `send()` returns only once the whole batch is acknowledged (MQTT PUBACK at QoS 1, the write
    to the socket at QoS 0, an HTTP 2xx), so the caller may then advance the sink's buffer cursor.
    It raises `SinkError` when the batch should be retried later (outage, timeout, 5xx); data
    the far side will never accept (an InfluxDB 4xx) is isolated, logged, counted and dropped
    instead of raising, so that nothing blocks a sink forever.
    """

    name: str = "sink"

    def __init__(self, contexts: Mapping[str, DeviceContext]) -> None:
        self.contexts = contexts

    def update_contexts(self, contexts: Mapping[str, DeviceContext]) -> None:
        """Devices were added, changed or removed by a reload."""
        self.contexts = contexts

    @abstractmethod
    async def start(self) -> None:
        """Begin connecting; must not block on an unreachable server."""

    @abstractmethod
    async def send(self, readings: Sequence[Reading]) -> None:
        """Deliver the batch or raise `SinkError`."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; never raises."""

    @property
    def connected(self) -> bool:
        return True

    async def wait_ready(self, seconds: float) -> None:
        """The pause before retrying a failed batch; a sink that can tell when its far side is
        back (a reconnect) ends it early, so a replay does not wait out a long backoff."""
        await asyncio.sleep(seconds)
