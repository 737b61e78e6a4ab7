"""A live terminal view (rich) of a running gateway, sized to the terminal: a summary (devices,
sinks, where to look next) that always stays on screen, then as many tags as fit, bad first,
then a line of keys. Used by `gateway demo` and `gateway run --live`.

While the view runs, log records go to a file (and the last warning to the view's bottom
line), never to the terminal: a library's log line written between two redraws would land
inside the table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from gateway.live_layout import (
    Columns,
    TagRow,
    ViewState,
    distinct_names,
    pack,
    paginate,
    plan_columns,
    select_rows,
    shorten_middle,
)

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.state import GatewayState

QUALITY_STYLE = {"good": "green", "uncertain": "yellow", "bad": "bold red"}
KEYS_HELP = "keys: n/p page · b bad only · d device · a all · q quit"


class LogTail(logging.Handler):
    """Keeps the last warning (or worse) for the view's bottom line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str = ""
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = f"{record.levelname} {record.name}: {record.getMessage()}".splitlines()[0]


def default_log_path() -> Path:
    return Path(tempfile.gettempdir()) / f"gateway-live-{os.getpid()}.log"


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[LogTail]:
    """Route the root logger to `path` (same format and redaction as before) while the view
    runs; the terminal handlers come back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:]
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    for handler in saved:
        if handler.formatter is not None:
            file_handler.setFormatter(handler.formatter)
        for filt in handler.filters:
            file_handler.addFilter(filt)
    tail = LogTail()
    for filt in file_handler.filters:
        tail.addFilter(filt)
    root.handlers[:] = [file_handler, tail]
    try:
        yield tail
    finally:
        root.handlers[:] = saved
        file_handler.close()


def tag_rows(gateway: GatewayState) -> list[TagRow]:
    enums = _enums_of(gateway.config)
    return [TagRow(device, tag, format_value(r.value, enum=enums.get((device, tag))),
                   r.unit or "", r.quality.value, r.source_ts.strftime("%H:%M:%S.%f")[:-3])
            for (device, tag), r in gateway.tags.latest.items()]


_enum_cache: list[tuple[GatewayConfig, dict[tuple[str, str], Mapping[int, str]]]] = []


def _enums_of(config: GatewayConfig) -> Mapping[tuple[str, str], Mapping[int, str]]:
    """(device, tag) -> value texts of the `enum:` tags; derived once per config (a reload
    brings a new one), not on every frame."""
    if not _enum_cache or _enum_cache[0][0] is not config:
        _enum_cache[:] = [(config, {(d.name, t.name): t.enum for d in config.devices
                                    for t in d.declared_tags() if t.enum})]
    return _enum_cache[0][1]


def summary_parts(gateway: GatewayState, now: float) -> tuple[list[str], list[str]]:
    """The devices line's parts and the sinks line's parts."""
    health = sorted(gateway.health.items())
    down = [(name, h.error) for name, h in health if not h.healthy(now)]
    devices = [f"devices {len(health)}: {len(health) - len(down)} answering, "
               f"{len(down)} not answering"]
    devices += [f"{name}: {error or 'no answer yet'}" for name, error in down]
    sinks = ["sinks:"] if gateway.sinks else ["sinks: none"]
    for sink in gateway.sinks:
        state = "connected" if sink.connected else "NOT connected"
        backlog = ""
        if gateway.buffer is not None:
            backlog = f", backlog {gateway.buffer.depth(sink.name)}"
            age = gateway.buffer.oldest_unsent_age(sink.name)
            if age > 5:
                backlog += f" (oldest {age:.0f}s)"
        sinks.append(f"{sink.name} {state}{backlog}")
    return devices, sinks


def status_url(gateway: GatewayState) -> str | None:
    http = gateway.config.gateway.http
    return f"status page http://{http.listen}/" if http.enabled else None


def render(gateway: GatewayState, width: int, height: int, state: ViewState,
           extra: list[str] | None = None, tail: LogTail | None = None) -> Group:
    """Exactly the lines that fit `width` x `height` (one line is left for the cursor)."""
    devices, sinks = summary_parts(gateway, time.monotonic())
    where = [p for p in (status_url(gateway), *(extra or [])) if p]
    summary = pack(devices, width) + pack(sinks, width, " ") + pack(where, width)
    rows = tag_rows(gateway)
    state.devices = sorted({r.device for r in rows} | set(gateway.health))
    shown = select_rows(rows, state)
    bottom = [_keys_line(state, 1, 1, width)]
    if tail is not None and tail.last:
        bottom.insert(0, shorten_middle(f"last log: {tail.last}", width))
    per_page = max(1, height - 1 - len(summary) - 1 - len(bottom))
    page = paginate(shown, per_page, state.page)
    state.page = page.number
    bottom[-1] = _keys_line(state, page.number + 1, page.count, width)
    columns = plan_columns(width, shown)
    lines: list[Text] = [Text(line, style="bold") for line in summary]
    lines.append(Text(_header(columns), style="dim"))
    lines += _table(page.rows, columns, shown)
    lines += [Text(line, style="dim") for line in bottom]
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
        line.truncate(width)
    return Group(*lines)


def _keys_line(state: ViewState, page: int, pages: int, width: int) -> str:
    filters = []
    if state.bad_only:
        filters.append("bad only")
    if state.device:
        filters.append(f"device {state.device}")
    shown = f" [{', '.join(filters)}]" if filters else ""
    return shorten_middle(f"page {page}/{pages}{shown} · {KEYS_HELP}", width)


def _cells(columns: Columns, device: str, tag: str, value: str, unit: str, quality: str,
           when: str) -> list[str]:
    cells = [device.ljust(columns.device), tag.ljust(columns.tag),
             value.rjust(columns.value)[:columns.value]]
    if columns.unit:
        cells.append(unit[:columns.unit].ljust(columns.unit))
    cells.append(quality.ljust(columns.quality))
    if columns.time:
        cells.append(when.ljust(columns.time))
    return cells


def _header(columns: Columns) -> str:
    return " ".join(_cells(columns, "device", "tag", "value", "unit", "quality",
                           "source (UTC)")).rstrip()


def _table(rows: list[TagRow], columns: Columns, all_rows: list[TagRow]) -> list[Text]:
    """Names are shortened consistently across every row the filter keeps, not only the page."""
    tags = distinct_names((r.tag for r in all_rows), columns.tag)
    devices = distinct_names((r.device for r in all_rows), columns.device)
    lines = []
    for row in rows:
        value = row.value if len(row.value) <= columns.value else shorten_middle(
            row.value, columns.value, columns.value - 12)
        cells = _cells(columns, devices[row.device], tags[row.tag], value, row.unit,
                       row.quality, row.time)
        line = Text(" ".join(cells[:-2 if columns.time else -1]) + " ")
        line.append(cells[-2 if columns.time else -1], style=QUALITY_STYLE.get(row.quality, ""))
        if columns.time:
            line.append(" " + cells[-1])
        lines.append(line)
    return lines


class KeyReader:
    """Single key presses from a terminal's stdin (cbreak mode, restored on exit)."""

    def __init__(self, on_key: Callable[[str], None]) -> None:
        self.on_key = on_key
        self.fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else -1
        self._saved: list[object] | None = None

    def __enter__(self) -> KeyReader:
        if self.fd < 0:
            return self
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)  # keys arrive one by one; Ctrl-C still sends SIGINT
        asyncio.get_running_loop().add_reader(self.fd, self._read)
        return self

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            for char in os.read(self.fd, 32).decode(errors="ignore"):
                self.on_key(char)

    def __exit__(self, *exc: object) -> None:
        if self.fd < 0 or self._saved is None:
            return
        import termios

        asyncio.get_running_loop().remove_reader(self.fd)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)  # type: ignore[arg-type]


async def live_view(gateway: GatewayState, stop: asyncio.Event,
                    extra: Callable[[], list[str]] = lambda: [], console: Console | None = None,
                    refresh: float = 1.0, device: str | None = None,
                    log_path: Path | None = None) -> None:
    """Redraw until `stop` is set; `extra` adds parts to the summary's last line (the demo's
    message count and mosquitto_sub hint). `q` sets `stop`."""
    console = console or Console()
    state = ViewState(device=device)
    redraw = asyncio.Event()

    def on_key(char: str) -> None:
        if char == "q":
            stop.set()
        elif state.key(char):
            redraw.set()

    def frame(tail: LogTail) -> Group:
        width, height = console.size
        return render(gateway, width, height, state, extra(), tail)

    with (logs_to_file(log_path or default_log_path()) as tail, KeyReader(on_key),
          Live(frame(tail), console=console, auto_refresh=False, screen=False,
               redirect_stdout=False, redirect_stderr=False) as live):
        while not stop.is_set():
            live.update(frame(tail), refresh=True)
            redraw.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, redraw), refresh)


async def _first(*events: asyncio.Event) -> None:
    """Return when any of `events` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def format_value(value: object, max_items: int = 6,
                 enum: Mapping[int, str] | None = None) -> str:
    """A value as a table cell: floats to 3 decimals, an array as a short list with its length,
    an enumeration's code with its text (`3 holding`), as on the status page."""
    if enum and isinstance(value, int) and not isinstance(value, bool) and value in enum:
        return f"{value} {enum[value]}"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, tuple | list):
        items = ", ".join(format_value(v) for v in value[:max_items])
        more = f", ... ({len(value)} items)" if len(value) > max_items else ""
        return f"[{items}{more}]"
    return str(value)
