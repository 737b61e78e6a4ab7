"""`gateway status`: the buffer's backlog per sink and the devices, read from the buffer file
(read-only, beside a running gateway) and, when it answers, from the gateway's /api/status.
Formatting is pure (data in, lines out); reading is two small functions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.buffer import buffer_devices as read_devices

COLUMNS_EXPLAINED = """\
columns:
  backlog        readings in the buffer this sink has not acknowledged yet (they wait there)
  oldest unsent  age of the oldest of them: how far behind the sink is
  dropped        readings deleted unsent because the buffer reached gateway.buffer.max_size
  unconfirmed    readings handed to the sink whose acknowledgement has not come; they are sent
                 again (at-least-once). Nonzero on a sink that never connected: its first
                 batch was tried and never confirmed; check the sink's url and the log
  readings       (devices) readings of the device still in the buffer (delivered ones are
                 trimmed), bad ones among them
  last reading   source time of the device's newest reading in the buffer"""


@dataclass(frozen=True)
class DeviceRow:
    name: str
    readings: int
    bad: int
    last_ts: datetime | None


def buffer_devices(path: str | Path) -> list[DeviceRow]:
    """Per device in the buffer's readings: how many, how many not good, the newest time.
    Read-only, like buffer_report."""
    return [DeviceRow(name, count, bad, datetime.fromtimestamp(ts / 1e6, UTC) if ts else None)
            for name, count, bad, ts in read_devices(path)]


def running_status(listen: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The running gateway's /api/status, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{listen}/api/status", timeout=timeout) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data
    except (OSError, ValueError, urllib.error.URLError):
        return None


def format_status(buffer_path: str, sinks: list[dict[str, Any]], devices: list[DeviceRow],
                  live: dict[str, Any] | None, listen: str,
                  configured: Sequence[str] = ()) -> list[str]:
    """The human report: sinks, devices (configured, in the buffer or running), what each
    column means."""
    connected = {s["name"]: s.get("connected") for s in (live or {}).get("sinks", [])}
    lines = [f"buffer {buffer_path} (read-only)",
             f"gateway at http://{listen}/: " + ("running" if live else "not answering "
                                                 "(devices below: from the config and the buffer)"),
             "", "sinks",
             f"  {'sink':<12} {'backlog':>9} {'oldest unsent':>14} {'dropped':>9} "
             f"{'unconfirmed':>12}  connected"]
    for row in sinks:
        state = connected.get(row["sink"])
        shown = "-" if state is None else ("yes" if state else "NO")
        lines.append(f"  {row['sink']:<12} {row['depth']:>9} {row['oldest_unsent_age_s']:>13.1f}s "
                     f"{row['dropped']:>9} {row['unconfirmed']:>12}  {shown}")
    lines += ["", "devices", _device_header(live is not None)]
    lines += _device_lines(devices, live, configured)
    notes = [f"note: {row['sink']} has {row['unconfirmed']} unconfirmed and is not connected: "
             "it never got an answer for them; they are sent again once it connects"
             for row in sinks if row["unconfirmed"] and connected.get(row["sink"]) is False]
    return [*lines, "", *notes, *([""] if notes else []), *COLUMNS_EXPLAINED.splitlines()]


def _device_header(live: bool) -> str:
    state = f"{'state':<14} " if live else ""
    return f"  {'device':<16} {state}{'readings':>9} {'bad':>6}  {'last reading (UTC)':<20} error"


def _device_lines(devices: list[DeviceRow], live: dict[str, Any] | None,
                  configured: Sequence[str]) -> list[str]:
    in_buffer = {d.name: d for d in devices}
    running = {d["name"]: d for d in (live or {}).get("devices", [])}
    names = sorted(set(in_buffer) | set(running) | set(configured))
    if not names:
        return ["  (none: no device configured, none in the buffer, no gateway answered)"]
    lines = []
    for name in names:
        row = in_buffer.get(name)
        info = running.get(name, {})
        state = ""
        if live is not None:
            state = ("answering" if info.get("healthy") else
                     "not answering" if info else "not running") .ljust(14) + " "
        when = row.last_ts.strftime("%Y-%m-%d %H:%M:%S") if row and row.last_ts else "-"
        lines.append(f"  {name:<16} {state}{row.readings if row else 0:>9} "
                     f"{row.bad if row else 0:>6}  {when:<20} {info.get('error') or ''}".rstrip())
    return lines
