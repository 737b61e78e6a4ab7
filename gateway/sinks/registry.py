"""Sink lookup through the `gateway.sinks` entry-point group (built-ins and plugins alike)."""

from __future__ import annotations

from importlib.metadata import entry_points

from gateway.errors import GatewayError
from gateway.sinks import Sink

ENTRY_POINT_GROUP = "gateway.sinks"


class SinkNotFound(GatewayError):
    pass


def available_sinks() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def builtin_sinks() -> list[str]:
    """The sinks this package ships (as opposed to installed plugins)."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                   if ep.value.startswith("gateway.sinks.")})


def load_sink(type_name: str) -> type[Sink]:
    """The sink class registered under `type_name`; a clear error names a missing or broken
    plugin."""
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
    if not matches:
        known = ", ".join(available_sinks()) or "none"
        raise SinkNotFound(f"unknown sink type {type_name!r} (installed: {known})")
    try:
        sink = matches[0].load()
    except Exception as exc:  # a plugin's import error must name the plugin
        raise SinkNotFound(
            f"sink plugin {type_name!r} ({matches[0].value}) failed to import: {exc}") from exc
    if not (isinstance(sink, type) and issubclass(sink, Sink)):
        raise SinkNotFound(f"sink plugin {type_name!r} ({matches[0].value}) is not a Sink class")
    return sink
