"""The `Driver` base every protocol implements, built-in or plugin."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from gateway.errors import WriteRefused
from gateway.kpi.config import OeeConfig
from gateway.models import Reading
from gateway.strict import StrictModel
from gateway.units import Duration

Publish = Callable[[Sequence[Reading]], None]
"""How a push driver hands readings to the runtime as they arrive."""

MIN_POLL_INTERVAL = 0.01
"""10ms: no PLC scan cycle or OPC UA sampling is faster that a poll could see; below it a
gateway only loads the PLC and its network (0.001ms meant 4,400 requests/s at the PLC)."""



TAG_NAME_PATTERN = r"^[^/#+\s]+$"


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class TagConfig(StrictModel):
    """Keys every tag has, whatever its driver; drivers subclass it with their own.

    Frozen, so that the tags with the same keys given can share one fields set: a set of
    four names is 216 bytes, a quarter of a Modbus tag's model (21 MiB at 100,000 tags,
    measured). `model_copy(update=...)` copies the set before it adds to it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, pattern=TAG_NAME_PATTERN,
                      description="Tag name (a topic level, an InfluxDB field)")
    unit: str | None = Field(None, description="Engineering unit, e.g. degC")
    deadband: float | None = Field(None, ge=0, description="Publish only moves larger than this")
    enum: dict[int, str] | None = Field(
        None, description="Text of each value of an enumeration, e.g. {0: idle, 1: running, "
        "2: fault}: MQTT payloads carry it as `text`, the status page shows it")
    min_write_interval: Duration = Field(
        0.1, ge=0, description="Shortest time between two writes to this tag, e.g. 100ms (a "
        "sooner command is refused, nothing written: a runaway client cannot hammer the PLC); "
        "0 turns it off")

    @model_validator(mode="after")
    def _share_fields_set(self) -> Any:
        given = self.__pydantic_fields_set__
        object.__setattr__(self, "__pydantic_fields_set__",
                           _FIELDS_SETS.setdefault(frozenset(given), given))
        return self


class DeviceConfig(StrictModel):
    """Fields every device has, whatever its driver. Drivers subclass it with their own
    `connection` and `tags` models; unknown keys are errors."""

    name: str = Field(min_length=1, pattern=r"^[^/#+\s]+$",
                      description="Unique device name; the InfluxDB measurement and a topic level")
    driver: str = Field(description="Driver name: modbus, opcua or an installed plugin")
    area: str = Field("", description="ISA-95 area (topic level, InfluxDB tag)")
    line: str = Field("", description="ISA-95 line (topic level, InfluxDB tag)")
    poll_interval: Duration = Field(1.0, gt=0, description="Poll period, e.g. 250ms, 1s")
    enabled: bool = Field(True, description="A disabled device is validated but not polled")
    oee: OeeConfig | None = Field(
        None, description="Edge KPIs of this machine: which tags say running, parts and "
        "rejects (see docs/oee.md)")
    reconnect_max_backoff: Duration = Field(
        30.0, gt=0, description="Cap of the reconnect backoff (it starts at 0.5 s and doubles, "
        "with jitter)")

    @field_validator("poll_interval")
    @classmethod
    def _not_faster_than_a_plc(cls, seconds: float) -> float:
        if seconds < MIN_POLL_INTERVAL:
            raise ValueError("must be at least 10ms: a PLC or OPC UA server does not update "
                             "faster, so faster polling only floods it with requests")
        return seconds

    def declared_tags(self) -> Sequence[TagConfig]:
        """The device's tags, where its driver declares them as `TagConfig`s (the built-ins
        do): the driver's tag names, units, deadbands and enumerations derive from them."""
        return ()

    def value_types(self) -> dict[str, str]:
        """Tag name -> the type of its published value (a scaled integer publishes float64),
        where the config says it; sinks with typed schemas (Sparkplug) use it."""
        return {}

    def tag_types(self) -> dict[str, str]:
        """Tag name -> its declared data type (bool, uint16, ...; "" where the driver learns it
        only when reading). Empty when the driver declares no tags this way."""
        return {}


class Driver(ABC):
    """One connection to one device.

    The runtime calls `connect()`, then either `read()` once per `poll_interval` (a poll
    driver) or, when `pushes` is true, `subscribe(publish)` once, which hands readings over as
    they arrive until the connection fails; and `close()` at the end or after a failure.
    `connect()`, `read()` and `subscribe()` raise `DeviceUnreachable` when the device does not
    answer (the runtime reconnects with backoff and publishes every tag bad once); a tag that
    cannot be decoded comes back as a bad-quality reading instead.
    """

    config_model: ClassVar[type[DeviceConfig]] = DeviceConfig

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def tag_names(self) -> list[str]:
        """Every tag this device publishes, in config order."""
        return [tag.name for tag in self.config.declared_tags()]

    def tag_units(self) -> dict[str, str | None]:
        """Unit per tag, for the bad readings the runtime makes when the device is down."""
        return {tag.name: tag.unit for tag in self.config.declared_tags()}

    def deadbands(self) -> dict[str, float]:
        """Deadband per tag that has one: publish only when the value moved more than this."""
        return {t.name: t.deadband for t in self.config.declared_tags() if t.deadband is not None}

    def enums(self) -> dict[str, dict[int, str]]:
        """Value texts per tag that is an enumeration."""
        return {t.name: t.enum for t in self.config.declared_tags() if t.enum}

    def min_write_intervals(self) -> dict[str, float]:
        """Seconds that must pass between two writes to each tag."""
        return {t.name: t.min_write_interval for t in self.config.declared_tags()}

    def describe_plan(self) -> str:
        """A human-readable description of how the device is read (`gateway check --plan`)."""
        return f"{self.name}: {len(self.tag_names())} tag(s)"

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise `DeviceUnreachable` if the device does not answer."""

    @abstractmethod
    async def read(self) -> list[Reading]:
        """Read every tag once."""

    @property
    def pushes(self) -> bool:
        """True when the device pushes values (`subscribe`) instead of being polled (`read`)."""
        return False

    async def subscribe(self, publish: Publish) -> None:
        """A push driver: call `publish` with readings as they arrive; return only when asked to
        stop (cancelled); raise `DeviceUnreachable` when the connection fails."""
        raise NotImplementedError(f"{type(self).__name__} does not push")

    def writable_tags(self) -> set[str]:
        """The tags `write` accepts (their config says `writable: true`)."""
        return set()

    async def write(self, tag: str, value: object) -> object:
        """Write `value` to `tag` and return the value read back from the device. Raises
        `WriteRefused` (nothing written), or `DriverError` (the device is down or its answer
        leaves it unclear)."""
        raise WriteRefused("this driver does not support writes")

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; never raises."""
