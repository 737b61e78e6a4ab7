"""The `Driver` base every protocol implements, built-in or plugin."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.models import Reading
from gateway.units import Duration

MIN_POLL_INTERVAL = 0.01
"""10ms: no PLC scan cycle or OPC UA sampling is faster that a poll could see; below it a
gateway only loads the PLC and its network (0.001ms meant 4,400 requests/s at the PLC)."""


class DeviceConfig(BaseModel):
    """Fields every device has, whatever its driver. Drivers subclass it with their own
    `connection` and `tags` models; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[^/#+\s]+$",
                      description="Unique device name; the InfluxDB measurement and a topic level")
    driver: str = Field(description="Driver name: modbus, opcua or an installed plugin")
    area: str = Field("", description="ISA-95 area (topic level, InfluxDB tag)")
    line: str = Field("", description="ISA-95 line (topic level, InfluxDB tag)")
    poll_interval: Duration = Field(1.0, gt=0, description="Poll period, e.g. 250ms, 1s")
    enabled: bool = Field(True, description="A disabled device is validated but not polled")

    @field_validator("poll_interval")
    @classmethod
    def _not_faster_than_a_plc(cls, seconds: float) -> float:
        if seconds < MIN_POLL_INTERVAL:
            raise ValueError("must be at least 10ms: a PLC or OPC UA server does not update "
                             "faster, so faster polling only floods it with requests")
        return seconds


class Driver(ABC):
    """One connection to one device.

    The runtime calls `connect()`, then `read()` once per `poll_interval`, and `close()` at the
    end or after a failure. `connect()` and `read()` raise `DeviceUnreachable` when the device
    does not answer (the runtime reconnects with backoff and publishes every tag bad once);
    a tag that cannot be decoded comes back from `read()` as a bad-quality reading instead.
    """

    config_model: ClassVar[type[DeviceConfig]] = DeviceConfig

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def tag_names(self) -> list[str]:
        """Every tag this device publishes, in config order."""

    def tag_units(self) -> dict[str, str | None]:
        """Unit per tag, for the bad readings the runtime makes when the device is down."""
        return {}

    def deadbands(self) -> dict[str, float]:
        """Deadband per tag that has one: publish only when the value moved more than this."""
        return {}

    def describe_plan(self) -> str:
        """A human-readable description of how the device is read (`gateway check --plan`)."""
        return f"{self.name}: {len(self.tag_names())} tag(s)"

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise `DeviceUnreachable` if the device does not answer."""

    @abstractmethod
    async def read(self) -> list[Reading]:
        """Read every tag once."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; never raises."""
