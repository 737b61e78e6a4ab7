"""Commands: the one way down, from a sink's subscription to a driver's `write`. A command is
carried out now or refused now (a setpoint applied an hour late is worse than none): never
buffered. Commands for one device run one at a time, in order, between its polls; each gets
exactly one result, is logged and counted."""

from __future__ import annotations

import asyncio
import logging
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

    async def execute(self, command: Command) -> CommandResult:
        result = await self._execute(command)
        outcome = "ok" if result.ok else "refused"
        COUNTERS.inc("gateway_writes_total", device=command.device, tag=command.tag,
                     result=outcome)
        log.info("command %s.%s = %r (id %s): %s", command.device, command.tag, command.value,
                 command.id, "ok, read back " + repr(result.value) if result.ok
                 else f"refused: {result.error}")
        return result

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
            try:
                value = await driver.write(command.tag, command.value)
            except WriteRefused as exc:
                return CommandResult(False, error=str(exc))
            except DriverError as exc:  # down, or a read-back that differs (DecodeError)
                return CommandResult(False, error=f"write not confirmed: {exc}")
        return CommandResult(True, value=value)

