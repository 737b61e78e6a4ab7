"""A live terminal view (rich) of a running gateway: devices, tags, values, quality, sinks and
the buffer. Used by `gateway demo` and `gateway run --live`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from gateway.state import GatewayState

QUALITY_STYLE = {"good": "green", "uncertain": "yellow", "bad": "bold red"}


def render(gateway: GatewayState, footer: str = "") -> Group:
    now = time.monotonic()
    devices = Table(title="devices", expand=True)
    for column in ("device", "state", "last error"):
        devices.add_column(column)
    for name, health in sorted(gateway.health.items()):
        ok = health.healthy(now)
        devices.add_row(name, Text("answering" if ok else "not answering",
                                   style="green" if ok else "bold red"), health.error or "")
    tags = Table(title="tags", expand=True)
    for column in ("device", "tag", "value", "unit", "quality", "source time (UTC)"):
        tags.add_column(column, justify="right" if column == "value" else "left")
    for (device, tag), reading in sorted(gateway.tags.latest.items()):
        shown = format_value(reading.value)
        quality = reading.quality.value
        tags.add_row(device, tag, shown, reading.unit or "",
                     Text(quality, style=QUALITY_STYLE[quality]),
                     reading.source_ts.strftime("%H:%M:%S.%f")[:-3])
    sinks = Table(title="sinks and buffer", expand=True)
    for column in ("sink", "connected", "backlog", "oldest unsent", "dropped"):
        sinks.add_column(column)
    for sink in gateway.sinks:
        buffer = gateway.buffer
        sinks.add_row(sink.name,
                      Text("yes" if sink.connected else "no",
                           style="green" if sink.connected else "bold red"),
                      str(buffer.depth(sink.name)) if buffer else "-",
                      f"{buffer.oldest_unsent_age(sink.name):.1f}s" if buffer else "-",
                      str(buffer.dropped(sink.name)) if buffer else "-")
    parts: list[Table | Text] = [devices, tags, sinks]
    if footer:
        parts.append(Text(footer))
    return Group(*parts)


async def live_view(gateway: GatewayState, stop: asyncio.Event,
                    footer: Callable[[], str] = lambda: "", console: Console | None = None,
                    refresh: float = 1.0) -> None:
    """Redraw until `stop` is set."""
    with Live(render(gateway), console=console, refresh_per_second=4, screen=False) as live:
        while not stop.is_set():
            live.update(render(gateway, footer()))
            try:
                await asyncio.wait_for(stop.wait(), refresh)
            except TimeoutError:
                pass


def format_value(value: object, max_items: int = 6) -> str:
    """A value as a table cell: floats to 3 decimals, an array as a short list with its length."""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, tuple | list):
        items = ", ".join(format_value(v) for v in value[:max_items])
        more = f", ... ({len(value)} items)" if len(value) > max_items else ""
        return f"[{items}{more}]"
    return str(value)
