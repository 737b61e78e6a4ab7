"""Driver lookup through the `gateway.drivers` entry-point group (built-ins and plugins alike)."""

from __future__ import annotations

from importlib.metadata import entry_points

from drivers.base import Driver
from gateway.errors import GatewayError

ENTRY_POINT_GROUP = "gateway.drivers"


class DriverNotFound(GatewayError):
    pass


def available_drivers() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def builtin_drivers() -> list[str]:
    """The drivers this package ships (as opposed to installed plugins)."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                  if ep.value.startswith("drivers."))


def load_driver(name: str) -> type[Driver]:
    """The driver class registered under `name`; a clear error names a missing or broken plugin."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(available_drivers()) or "none"
        raise DriverNotFound(f"unknown driver {name!r} (installed: {known})")
    try:
        driver = matches[0].load()
    except Exception as exc:  # a plugin's import error must name the plugin
        raise DriverNotFound(
            f"driver plugin {name!r} ({matches[0].value}) failed to import: {exc}") from exc
    if not (isinstance(driver, type) and issubclass(driver, Driver)):
        raise DriverNotFound(f"driver plugin {name!r} ({matches[0].value}) is not a Driver class")
    return driver
