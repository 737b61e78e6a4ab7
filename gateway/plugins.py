"""Plugin lookup through entry points: drivers (`gateway.drivers`) and sinks (`gateway.sinks`),
built-ins and third-party packages alike."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from gateway.errors import GatewayError


class PluginNotFound(GatewayError):
    """No plugin of that name, or it failed to import, or it is not of the expected kind."""


def plugin_names(group: str, builtin_prefix: str | None = None) -> list[str]:
    """The names registered in `group`; with `builtin_prefix`, only those shipped here."""
    return sorted({ep.name for ep in entry_points(group=group)
                   if builtin_prefix is None or ep.value.startswith(builtin_prefix)})


def load_plugin(group: str, name: str, base: type[Any], kind: str) -> Any:
    """The class registered under `name`; a clear error names a missing or broken plugin."""
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        known = ", ".join(plugin_names(group)) or "none"
        raise PluginNotFound(f"unknown {kind} {name!r} (installed: {known})")
    try:
        loaded = matches[0].load()
    except Exception as exc:  # a plugin's import error must name the plugin
        raise PluginNotFound(
            f"{kind} plugin {name!r} ({matches[0].value}) failed to import: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        raise PluginNotFound(f"{kind} plugin {name!r} ({matches[0].value}) is not a "
                             f"{base.__name__} class")
    return loaded
