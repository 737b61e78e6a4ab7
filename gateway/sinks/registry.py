"""Sink lookup through the `gateway.sinks` entry-point group (built-ins and plugins alike)."""

from __future__ import annotations

from gateway.plugins import PluginNotFound, load_plugin, plugin_names
from gateway.sinks import Sink

ENTRY_POINT_GROUP = "gateway.sinks"


class SinkNotFound(PluginNotFound):
    pass


def available_sinks() -> list[str]:
    return plugin_names(ENTRY_POINT_GROUP)


def builtin_sinks() -> list[str]:
    """The sinks this package ships (as opposed to installed plugins)."""
    return plugin_names(ENTRY_POINT_GROUP, "gateway.sinks.")


def load_sink(type_name: str) -> type[Sink]:
    """The sink class registered under `type_name`."""
    try:
        return load_plugin(ENTRY_POINT_GROUP, type_name, Sink, "sink type")
    except PluginNotFound as exc:
        raise SinkNotFound(str(exc).replace("sink type plugin", "sink plugin")) from None
