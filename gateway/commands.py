"""Commands: the one way down, from a sink's subscription to a driver's `write`. A command is
carried out now or refused now (a setpoint applied an hour late is worse than none): never
buffered. Commands for one device run one at a time, in order, between its polls; each gets
exactly one result, is logged and counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from drivers.base import Driver
from gateway.errors import DriverError, WriteRefused
from gateway.metrics import COUNTERS
from gateway.models import iso_z, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    device: str
    tag: str
    value: object
    id: str | None = None
    reply_to: str | None = None
    """Where the result goes besides the sink's own result topic (an MQTT 5 response topic),
    for the log."""


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    value: object = None
    """The value read back after the write (ok), else None."""
    error: str | None = None
    ts: datetime = field(default_factory=utc_now)

    def payload(self, command_id: str | None) -> dict[str, object]:
        """The `/set/result` message (DESIGN.md, "Commands")."""
        if self.ok:
            return {"id": command_id, "ok": True, "value": self.value,
                    "ts": iso_z(self.ts)}
        return {"id": command_id, "ok": False, "error": self.error}


class CommandRouter:
    """Executes commands against the running devices. `device_of(name)` returns the device's
    driver and its lock (held by every poll), or None when the device is not configured;
    `is_up(name)` whether it answered its last poll."""

    def __init__(self, device_of: Callable[[str], tuple[Driver, asyncio.Lock] | None],
                 is_up: Callable[[str], bool]) -> None:
        self._device_of = device_of
        self._is_up = is_up
        self._last_write: dict[tuple[str, str], float] = {}
        """(device, tag) -> monotonic time its last write was sent to the driver."""

    async def execute(self, command: Command) -> CommandResult:
        return self._record(command, await self._execute(command))

    def refuse(self, command: Command, reason: str) -> CommandResult:
        """A command the sink could not even read (invalid JSON, no value, too many waiting):
        refused, logged and counted like the others."""
        return self._record(command, CommandResult(False, error=reason))

    def _record(self, command: Command, result: CommandResult) -> CommandResult:
        outcome = "ok" if result.ok else "refused"
        COUNTERS.inc("gateway_writes_total", device=command.device, tag=command.tag,
                     result=outcome)
        log.info("command %s.%s = %r (id %s%s): %s", command.device, command.tag,
                 command.value, command.id,
                 f", response topic {command.reply_to}" if command.reply_to else "",
                 "ok, read back " + repr(result.value) if result.ok
                 else f"refused: {result.error}")
        return result

    def tags_of(self, device: str) -> list[str]:
        """The tags of a running device (empty when there is none), to map topic levels
        back to tag names."""
        found = self._device_of(device)
        return found[0].tag_names() if found is not None else []

    async def _execute(self, command: Command) -> CommandResult:
        found = self._device_of(command.device)
        if found is None:
            return CommandResult(False, error=f"no device named {command.device!r}")
        driver, lock = found
        if command.tag not in driver.tag_names():
            return CommandResult(False, error=f"{command.device} has no tag {command.tag!r}")
        if command.tag not in driver.writable_tags():
            return CommandResult(False, error=f"{command.device}.{command.tag} is not writable "
                                 "(its config needs `writable: true`)")
        if not self._is_up(command.device):
            return CommandResult(False, error=f"{command.device} is down: nothing was written")
        async with lock:  # between two polls, after the commands queued before it
            too_soon = self._too_soon(driver, command)
            if too_soon is not None:
                return CommandResult(False, error=too_soon)
            try:
                value = await driver.write(command.tag, command.value)
            except WriteRefused as exc:
                return CommandResult(False, error=str(exc))
            except DriverError as exc:  # down, or a read-back that differs (DecodeError)
                return CommandResult(False, error=f"write not confirmed: {exc}")
        return CommandResult(True, value=value)

    def _too_soon(self, driver: Driver, command: Command) -> str | None:
        """Why the command comes too soon after the tag's last write (None when it may run);
        a command that may run is recorded as the tag's last write."""
        key = (command.device, command.tag)
        interval = driver.min_write_intervals().get(command.tag, 0.0)
        now = time.monotonic()
        last = self._last_write.get(key)
        if last is not None and now - last < interval:
            return (f"{command.device}.{command.tag} was written {(now - last) * 1000:.0f}ms "
                    f"ago; its min_write_interval is {interval * 1000:.0f}ms: nothing was "
                    "written")
        self._last_write[key] = now
        return None
