"""Sinks deliver buffered readings to the outside world (MQTT broker, InfluxDB)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from gateway.models import Reading

if TYPE_CHECKING:
    from gateway.commands import CommandRouter
from gateway.strict import StrictModel


@dataclass(frozen=True)
class DeviceContext:
    """What a sink knows about a device besides its readings (from the config)."""

    gateway: str
    site: str
    area: str
    line: str
    device: str
    value_types: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Tag -> the type of its published value (bool, int16 ... float64, string, array:<type>),
    where the driver knows it (a scaled integer tag publishes float64)."""
    enums: Mapping[str, Mapping[int, str]] = field(default_factory=dict, hash=False)
    """Tag -> the text of each value of an enumeration tag (`enum:` in its config)."""


class SinkSettings(StrictModel):
    """The config keys every sink has; each sink type's settings model extends it."""

    type: str = Field("", description="The sink type (mqtt, influxdb, sparkplug or a plugin); "
                      "defaults to the sink's name")


@dataclass(frozen=True)
class Delivery:
    """How the runtime feeds a sink, declared by the sink: the runtime owns the loop, the
    cursor, batching and pacing; the sink only sends one batch at a time."""

    batch_size: int = 1000
    """Readings handed to one `send()` at most."""
    flush_interval: float = 0.0
    """A partial batch waits up to this long for more readings (0: send what is there)."""
    max_rate: float | None = None
    """Readings per second at most (a replay that must not flood the far side)."""


@dataclass(frozen=True)
class SinkEnvironment:
    """What a sink is built with besides its own settings."""

    gateway_id: str
    site: str
    contexts: Mapping[str, DeviceContext]
    buffer_path: Path = Path("./data/buffer.db")
    """The buffer's file: a sink may keep small state files of its own beside it."""


class Sink(ABC):
    """Delivers batches of readings.

    `send()` returns only once the whole batch is acknowledged (MQTT PUBACK at QoS 1, the write
    to the socket at QoS 0, an HTTP 2xx), so the caller may then advance the sink's buffer cursor.
    It raises `SinkError` when the batch should be retried later (outage, timeout, 5xx); data
    the far side will never accept (an InfluxDB 4xx) is isolated, logged, counted and dropped
    instead of raising, so that nothing blocks a sink forever.
    """

    name: str = "sink"
    settings_model: ClassVar[type[SinkSettings]] = SinkSettings
    delivery: Delivery = Delivery()

    def __init__(self, contexts: Mapping[str, DeviceContext], name: str | None = None) -> None:
        self.contexts = contexts
        if name:
            self.name = name

    commands: CommandRouter | None = None
    """Set by the runtime before `start()` when `wants_commands`: where the sink sends the
    commands it receives (`await self.commands.execute(Command(...))`)."""

    @property
    def wants_commands(self) -> bool:
        """Whether this sink forwards commands to the devices (its config says `commands:
        true`); off unless a sink says so."""
        return False

    @classmethod
    def from_settings(cls, name: str, settings: SinkSettings,
                      environment: SinkEnvironment) -> Sink:
        """Build the sink named `name` in the config (the registry calls this)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from the config")

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

    async def wait_first_connection(self, seconds: float) -> None:
        """Before the first batch: up to `seconds` for the first connection attempt to
        succeed or fail. Readings polled while the broker's answer is still on its way then wait
        for it rather than fail with a warning on a normal start. A sink without a connection
        to make returns at once."""
        return

    async def wait_ready(self, seconds: float) -> None:
        """The pause before retrying a failed batch; a sink that can tell when its far side is
        back (a reconnect) ends it early, so a replay does not wait out a long backoff."""
        await asyncio.sleep(seconds)
