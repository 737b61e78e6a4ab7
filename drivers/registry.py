"""Driver lookup through the `gateway.drivers` entry-point group (built-ins and plugins alike)."""

from __future__ import annotations

from drivers.base import Driver
from gateway.plugins import PluginNotFound, load_plugin, plugin_names

ENTRY_POINT_GROUP = "gateway.drivers"


class DriverNotFound(PluginNotFound):
    pass


def available_drivers() -> list[str]:
    return plugin_names(ENTRY_POINT_GROUP)


def builtin_drivers() -> list[str]:
    """The drivers this package ships (as opposed to installed plugins)."""
    return plugin_names(ENTRY_POINT_GROUP, "drivers.")


def load_driver(name: str) -> type[Driver]:
    """The driver class registered under `name`; a clear error names a missing or broken
    plugin."""
    try:
        return load_plugin(ENTRY_POINT_GROUP, name, Driver, "driver")
    except PluginNotFound as exc:
        raise DriverNotFound(str(exc)) from None
