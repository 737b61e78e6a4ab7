"""What plugin authors import, and the only names promised to them: a driver or a sink package
needs nothing else from the gateway. Register a driver under the entry-point group
`gateway.drivers` and a sink under `gateway.sinks` (see docs/writing-a-driver.md and
docs/writing-a-sink.md)."""

from __future__ import annotations

from drivers.base import DeviceConfig, Driver, Publish
from gateway.errors import (
    ConfigError,
    DecodeError,
    DeviceUnreachable,
    DriverError,
    GatewayError,
    SinkError,
)
from gateway.models import Quality, Reading, bad_reading, good_reading, utc_now
from gateway.sinks import Delivery, DeviceContext, Sink, SinkEnvironment, SinkSettings
from gateway.strict import StrictModel
from gateway.units import Duration, Size

__all__ = [
    "ConfigError",
    "DecodeError",
    "Delivery",
    "DeviceConfig",
    "DeviceContext",
    "DeviceUnreachable",
    "Driver",
    "DriverError",
    "Duration",
    "GatewayError",
    "Publish",
    "Quality",
    "Reading",
    "Sink",
    "SinkEnvironment",
    "SinkError",
    "SinkSettings",
    "Size",
    "StrictModel",
    "bad_reading",
    "good_reading",
    "utc_now",
]
