"""Device supervision: one task per device, and the only owner of those tasks. A poll driver is
read on its own fixed grid; a push driver hands readings over as they arrive. Either way a
failure is reported once, then the device reconnects with capped backoff and jitter. Reloads
are serialized here, so that one device always has exactly one task."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from drivers.base import DeviceConfig, Driver
from drivers.registry import load_driver
from gateway.backoff import Backoff
from gateway.errors import DeviceUnreachable
from gateway.metrics import COUNTERS
from gateway.models import Reading, bad_reading
from gateway.state import DeviceHealth, GatewayState

log = logging.getLogger(__name__)

Publish = Callable[[Sequence[Reading]], None]
_READ_GRACE = 2.0  # seconds a stop waits for a read in flight before cancelling it


def build_drivers(devices: Iterable[DeviceConfig]) -> list[Driver]:
    return [load_driver(d.driver)(d) for d in devices if d.enabled]


class DeviceSupervisor:
    """Starts, stops and replaces the device tasks in the caller's TaskGroup."""

    def __init__(self, state: GatewayState, publish: Publish) -> None:
        self.state = state
        self.drivers: dict[str, Driver] = {}
        self.lock = asyncio.Lock()  # held by every change of the set of device tasks
        self._publish = publish
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Held by every poll and every command: a command runs between two polls, and commands
        # run one at a time in the order they came (asyncio.Lock is first come, first served).
        self._locks: dict[str, asyncio.Lock] = {}
        # Devices whose task is inside driver.read(), and devices asked to stop: a stop lets
        # a read in flight finish and buffers its answer (the PLC already served it).
        self._reading: set[str] = set()
        self._stopping: set[str] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def start_all(self, group: asyncio.TaskGroup, drivers: Iterable[Driver]) -> None:
        self._group = group
        for driver in drivers:
            self.start(driver)

    def start(self, driver: Driver) -> None:
        assert self._group is not None
        if driver.name in self._tasks:
            raise RuntimeError(f"{driver.name} already has a task")  # a bug, never two pollers
        self.drivers[driver.name] = driver
        self._locks[driver.name] = asyncio.Lock()
        self.state.health[driver.name] = DeviceHealth(driver.config.poll_interval)
        self._tasks[driver.name] = self._group.create_task(
            self._run_device(driver), name=f"device:{driver.name}")

    async def stop(self, name: str) -> None:
        """Stop one device's task; its last answer in flight is still published."""
        task = self._tasks.pop(name, None)
        self.drivers.pop(name, None)
        if task is None:
            return
        self._stopping.add(name)
        try:
            deadline = time.monotonic() + _READ_GRACE
            while name in self._reading and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the poller buffers the answer, then returns
            await _cancel(name, task)
        finally:
            self._stopping.discard(name)

    def device(self, name: str) -> tuple[Driver, asyncio.Lock] | None:
        """A running device's driver and the lock its polls hold (for commands)."""
        driver = self.drivers.get(name)
        return (driver, self._locks[name]) if driver is not None else None

    def is_up(self, name: str) -> bool:
        health = self.state.health.get(name)
        return health is not None and health.error is None and health.last_ok is not None

    async def stop_all(self) -> None:
        """Stop every device; no device starts after this (a late reload is refused)."""
        async with self.lock:
            self._closed = True
            await asyncio.gather(*(self.stop(name) for name in list(self._tasks)))

    # -- one device ------------------------------------------------------------------------

    async def _run_device(self, driver: Driver) -> None:
        """Connect, read until the device fails, then reconnect with backoff; until cancelled."""
        try:
            await self._connect_and_read(driver)
        finally:
            await driver.close()

    async def _connect_and_read(self, driver: Driver) -> None:
        cap = driver.config.reconnect_max_backoff
        backoff = Backoff(initial=min(0.5, cap), cap=cap)
        logged = ""
        while True:
            try:
                await driver.connect()
                log.info("%s: connected", driver.name)
                if driver.pushes:
                    await self._receive(driver, backoff)
                else:
                    await self._poll(driver, backoff)
                return  # asked to stop
            except DeviceUnreachable as exc:
                raise_if_cancelling()
                reason = str(exc)
            except Exception as exc:  # a driver bug must not take the gateway down
                raise_if_cancelling()
                log.exception("%s: unexpected driver error", driver.name)
                reason = f"driver error: {type(exc).__name__}: {exc}"
            self._failed(driver, reason, backoff, logged)
            logged = reason
            await driver.close()
            await asyncio.sleep(backoff.next())

    def _failed(self, driver: Driver, reason: str, backoff: Backoff, logged: str) -> None:
        COUNTERS.inc("gateway_device_errors_total", device=driver.name, kind="unreachable")
        self.state.health[driver.name].error = reason
        if backoff.attempts == 0:  # first failure since the last good read: report once
            log.warning("%s: unreachable (%s); reconnecting with backoff", driver.name, reason)
            self._publish(_all_bad(driver, reason))
        elif reason != logged:  # e.g. the PLC is back but now refuses the certificate
            log.warning("%s: still unreachable, now: %s", driver.name, reason)

    async def _poll(self, driver: Driver, backoff: Backoff) -> None:
        """Read every `poll_interval` on a fixed grid (no drift); skip slots a slow read missed."""
        interval = driver.config.poll_interval
        next_at = time.monotonic()
        while True:
            started = time.monotonic()
            self._reading.add(driver.name)
            try:
                async with self._locks[driver.name]:
                    readings = await driver.read()
            finally:
                self._reading.discard(driver.name)
            self.state.read_seconds.labels(driver.name).observe(time.monotonic() - started)
            self._answered(driver, readings, backoff)
            if driver.name in self._stopping:
                return
            raise_if_cancelling()
            next_at = _next_slot(driver.name, next_at, interval)
            await asyncio.sleep(next_at - time.monotonic())

    async def _receive(self, driver: Driver, backoff: Backoff) -> None:
        """A push driver publishes through `delivered` until its connection fails."""
        def delivered(readings: Sequence[Reading]) -> None:
            self._answered(driver, readings, backoff)

        await driver.subscribe(delivered)

    def _answered(self, driver: Driver, readings: Sequence[Reading], backoff: Backoff) -> None:
        health = self.state.health[driver.name]
        health.last_ok, health.error = time.monotonic(), None
        backoff.reset()
        COUNTERS.inc("gateway_device_polls_total", device=driver.name)
        COUNTERS.inc("gateway_readings_total", len(readings), device=driver.name)
        self._publish(readings)


def _next_slot(name: str, next_at: float, interval: float) -> float:
    """The next slot of the poll grid, skipping (and counting) the ones a slow read missed."""
    next_at += interval
    now = time.monotonic()
    if now > next_at:
        missed = int((now - next_at) // interval) + 1
        COUNTERS.inc("gateway_poll_overruns_total", missed, device=name)
        log.debug("%s: read overran its interval, skipping %d slot(s)", name, missed)
        next_at += missed * interval
    return next_at


def _all_bad(driver: Driver, reason: str) -> list[Reading]:
    units = driver.tag_units()
    return [bad_reading(driver.name, tag, reason, units.get(tag)) for tag in driver.tag_names()]


async def _cancel(name: str, task: asyncio.Task[None]) -> None:
    # Cancel again until it ends: a driver library may swallow one cancellation (pymodbus
    # turns it into a failed request), which must not keep the device polling forever.
    for _ in range(100):
        if task.done():
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.1)
        if done:
            return
    log.error("%s: the driver did not stop within 10 s", name)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed on the way (it is still pending)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
