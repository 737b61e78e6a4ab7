"""The supervisor: one task per device (poll on its own schedule), one per sink (deliver from
the buffer), all in one TaskGroup; SIGTERM stops polling, flushes within a deadline, and exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from drivers.base import DeviceConfig, Driver
from drivers.registry import load_driver
from gateway.backoff import Backoff
from gateway.buffer import DurableBuffer
from gateway.config import GatewayConfig, load_config
from gateway.errors import ConfigError, DeviceUnreachable, SinkError
from gateway.http_server import StatusServer
from gateway.metrics import COUNTERS
from gateway.models import Reading, bad_reading
from gateway.pipeline import DeadbandFilter
from gateway.sinks import DeviceContext, Sink

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    """When a device last answered, and why it did not since."""

    interval: float
    last_ok: float | None = None  # time.monotonic() of the last good read
    error: str | None = None

    def healthy(self, now: float, missed_cycles: int = 3) -> bool:
        return (self.error is None and self.last_ok is not None
                and now - self.last_ok <= missed_cycles * self.interval + 1.0)


@dataclass
class TagState:
    """The latest reading of every tag, for the live view and the status API."""

    latest: dict[tuple[str, str], Reading] = field(default_factory=dict)

    def update(self, readings: Sequence[Reading]) -> None:
        for reading in readings:
            self.latest[(reading.device, reading.tag)] = reading

    def forget(self, device: str) -> None:
        for key in [key for key in self.latest if key[0] == device]:
            del self.latest[key]


def device_contexts(config: GatewayConfig) -> dict[str, DeviceContext]:
    return {d.name: DeviceContext(gateway=config.gateway.id, site=config.gateway.site,
                                  area=d.area, line=d.line, device=d.name)
            for d in config.devices}


def build_sinks(config: GatewayConfig) -> list[Sink]:
    """The sinks the config names, each knowing every device's context."""
    contexts = device_contexts(config)
    sinks: list[Sink] = []
    if config.sinks.mqtt is not None:
        from gateway.sinks.mqtt import MqttSink
        sinks.append(MqttSink(config.sinks.mqtt, config.gateway.id, config.gateway.site,
                              contexts))
    if config.sinks.influxdb is not None:
        from gateway.sinks.influx import InfluxSink
        sinks.append(InfluxSink(config.sinks.influxdb, contexts))
    return sinks


def build_drivers(devices: Iterable[DeviceConfig]) -> list[Driver]:
    return [load_driver(d.driver)(d) for d in devices if d.enabled]


class Gateway:
    """Runs the whole job until `stop` is set."""

    def __init__(self, config: GatewayConfig, sinks: Sequence[Sink] | None = None,
                 drivers: Sequence[Driver] | None = None, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.sinks = list(build_sinks(config) if sinks is None else sinks)
        self.drivers = list(build_drivers(config.devices) if drivers is None else drivers)
        self.tags = TagState()
        self.health: dict[str, DeviceHealth] = {}
        self.read_seconds = Histogram(
            "gateway_read_seconds", "Duration of one poll of a device", ["device"],
            registry=None, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.buffer: DurableBuffer | None = None
        self.status_server: StatusServer | None = None
        self._new_data: dict[str, asyncio.Event] = {}
        self._polling_done = asyncio.Event()
        self._appended = 0
        self._unstored: list[Reading] = []  # published this loop pass, stored at its end
        self._group: asyncio.TaskGroup | None = None
        self._pollers: dict[str, asyncio.Task[None]] = {}
        # Devices whose poller is inside driver.read(), and devices asked to stop: a stop lets
        # a read in flight finish and buffers its answer (the PLC already served it).
        self._reading: set[str] = set()
        self._stopping: set[str] = set()
        deadbands = {(drv.name, tag): band for drv in self.drivers
                     for tag, band in drv.deadbands().items()}
        self._filter = DeadbandFilter(deadbands)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.config.gateway.buffer
        self.buffer = DurableBuffer(settings.path, [s.name for s in self.sinks],
                                    settings.max_size, settings.sync)
        self._new_data = {s.name: asyncio.Event() for s in self.sinks}
        self.status_server = None
        try:
            for sink in self.sinks:
                await sink.start()
            if self.config.gateway.http.enabled:
                self.status_server = StatusServer(self, self.config.gateway.http.listen,
                                                  self.config.gateway.http.token,
                                                  reload=self.reload_from_file)
                await self.status_server.start()
            await self._run_tasks(stop)
        finally:
            if self.status_server is not None:
                await self.status_server.close()
            for sink in self.sinks:
                await sink.close()
            self._store()
            self.buffer.close()

    async def _run_tasks(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            for driver in self.drivers:
                self._start_device(driver)
            senders = [group.create_task(self._deliver(s), name=f"sink:{s.name}")
                       for s in self.sinks]
            await stop.wait()
            log.info("stopping: polling ends, flushing sinks (up to %.1fs)",
                     self.config.gateway.shutdown_timeout)
            await asyncio.gather(*(self._stop_device(name) for name in list(self._pollers)))
            self._store()
            self._polling_done.set()
            for event in self._new_data.values():
                event.set()
            pending: set[asyncio.Task[None]] = set()
            if senders:
                _, pending = await asyncio.wait(senders,
                                                timeout=self.config.gateway.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown deadline reached; the unsent readings stay in the buffer")

    async def reload_from_file(self) -> dict[str, Any]:
        """Re-read the config file (SIGHUP, `gateway reload`); an invalid file is refused with
        its errors and the running config stays."""
        if self.config_path is None:
            return {"ok": False, "errors": ["this gateway was not started from a file"]}
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running config stays:\n%s", exc.render())
            return {"ok": False, "errors": [str(p) for p in exc.problems]}
        return {"ok": True, "changes": await self.reload(config)}

    def _start_device(self, driver: Driver) -> None:
        assert self._group is not None
        self.health[driver.name] = DeviceHealth(driver.config.poll_interval)
        self._pollers[driver.name] = self._group.create_task(
            self._run_device(driver), name=f"device:{driver.name}")

    async def _stop_device(self, name: str) -> None:
        task = self._pollers.pop(name)
        self._stopping.add(name)
        try:
            deadline = time.monotonic() + _READ_GRACE
            while name in self._reading and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the poller buffers the answer, then returns
            await self._cancel(name, task)
        finally:
            self._stopping.discard(name)

    @staticmethod
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

    async def reload(self, config: GatewayConfig) -> dict[str, list[str]]:
        """Apply a new config's devices without a restart: removed ones stop, added ones start,
        changed ones restart. Buffered readings are untouched. Changes to `gateway` or `sinks`
        need a restart (logged)."""
        old = {d.name: d for d in self.config.devices}
        new = {d.name: d for d in config.devices}
        changes = {
            "added": [n for n in new if n not in old],
            "removed": [n for n in old if n not in new],
            "changed": [n for n in new if n in old and new[n] != old[n]],
        }
        for name in changes["removed"] + changes["changed"]:
            if name in self._pollers:
                await self._stop_device(name)
            self.health.pop(name, None)
            self.tags.forget(name)
        if config.gateway != self.config.gateway or config.sinks != self.config.sinks:
            log.warning("reload: changes to the gateway or sinks sections apply after a restart")
        self.config = self.config.model_copy(update={"devices": config.devices})
        contexts = device_contexts(self.config)
        for sink in self.sinks:
            sink.update_contexts(contexts)
        started = build_drivers(new[n] for n in changes["added"] + changes["changed"])
        self.drivers = [d for d in self.drivers if d.name not in old.keys() - new.keys()
                        and d.name not in changes["changed"]] + started
        self._filter.set_deadbands({(d.name, tag): band for d in self.drivers
                                    for tag, band in d.deadbands().items()})
        for driver in started:
            self._start_device(driver)
        log.info("reload: added %s, removed %s, changed %s", changes["added"] or "none",
                 changes["removed"] or "none", changes["changed"] or "none")
        return changes

    # -- devices ---------------------------------------------------------------------------

    async def _run_device(self, driver: Driver) -> None:
        """Connect, poll until the device fails, then reconnect with backoff; until cancelled."""
        try:
            await self._connect_and_poll(driver)
        finally:
            await driver.close()

    async def _connect_and_poll(self, driver: Driver) -> None:
        cap = float(getattr(driver.config, "reconnect_max_backoff", 30.0))
        backoff = Backoff(initial=min(0.5, cap), cap=cap)
        logged = ""
        while True:
            try:
                await driver.connect()
                log.info("%s: connected", driver.name)
                await self._poll(driver, backoff)
                return  # asked to stop
            except DeviceUnreachable as exc:
                _raise_if_cancelling()
                reason = str(exc)
            except Exception as exc:  # a driver bug must not take the gateway down
                _raise_if_cancelling()
                log.exception("%s: unexpected driver error", driver.name)
                reason = f"driver error: {type(exc).__name__}: {exc}"
            COUNTERS.inc("gateway_device_errors_total", device=driver.name, kind="unreachable")
            self.health[driver.name].error = reason
            if backoff.attempts == 0:  # first failure since the last good read: report once
                log.warning("%s: unreachable (%s); reconnecting with backoff", driver.name, reason)
                self._publish(self._all_bad(driver, reason))
            elif reason != logged:  # e.g. the PLC is back but now refuses the certificate
                log.warning("%s: still unreachable, now: %s", driver.name, reason)
            logged = reason
            await driver.close()
            await asyncio.sleep(backoff.next())

    async def _poll(self, driver: Driver, backoff: Backoff) -> None:
        """Read every `poll_interval` on a fixed grid (no drift); skip slots a slow read missed."""
        interval = driver.config.poll_interval
        next_at = time.monotonic()
        while True:
            started = time.monotonic()
            self._reading.add(driver.name)
            try:
                readings = await driver.read()
            finally:
                self._reading.discard(driver.name)
            now = time.monotonic()
            self.read_seconds.labels(driver.name).observe(now - started)
            health = self.health[driver.name]
            health.last_ok, health.error = now, None
            backoff.reset()
            COUNTERS.inc("gateway_device_polls_total", device=driver.name)
            COUNTERS.inc("gateway_readings_total", len(readings), device=driver.name)
            self._publish(readings)
            if driver.name in self._stopping:
                return
            _raise_if_cancelling()
            next_at += interval
            now = time.monotonic()
            if now > next_at:
                missed = int((now - next_at) // interval) + 1
                COUNTERS.inc("gateway_poll_overruns_total", missed, device=driver.name)
                log.debug("%s: read took %.3fs, skipping %d slot(s)", driver.name,
                          now - started, missed)
                next_at += missed * interval
            await asyncio.sleep(next_at - now)

    def _all_bad(self, driver: Driver, reason: str) -> list[Reading]:
        units = driver.tag_units()
        return [bad_reading(driver.name, tag, reason, units.get(tag)) for tag in driver.tag_names()]

    def _publish(self, readings: Sequence[Reading]) -> None:
        readings = self._filter.apply(readings)
        if not readings:
            return
        self.tags.update(readings)
        if not self._unstored:
            asyncio.get_running_loop().call_soon(self._store)
        self._unstored += readings

    def _store(self) -> None:
        """Append what the polls of one event loop pass produced, in one transaction: one
        commit per pass rather than one per poll. Until then (the rest of that pass) the
        readings are not buffered, as they were not while the poll's answer was decoded."""
        readings, self._unstored = self._unstored, []
        if not readings:
            return
        assert self.buffer is not None
        try:
            self.buffer.append(readings)
        except Exception:  # a full disk, say: said loudly, never a crash of the loop
            COUNTERS.inc("gateway_buffer_lost_total", len(readings))
            log.exception("buffer: %d readings could not be stored and are lost", len(readings))
            return
        self._appended += len(readings)
        for event in self._new_data.values():
            event.set()

    # -- sinks -----------------------------------------------------------------------------

    async def _deliver(self, sink: Sink) -> None:
        """Send the sink's backlog oldest first; advance its cursor only after an ack."""
        assert self.buffer is not None
        new_data = self._new_data[sink.name]
        batch_size = int(getattr(sink, "batch_size", 1000))
        flush_interval = float(getattr(sink, "flush_interval", 0.0))
        backoff = Backoff(initial=0.5, cap=30.0)
        pace = _Pace(self._max_rate(sink))
        while True:
            await pace.wait()
            last_id, batch = self.buffer.read(sink.name, batch_size)
            if not batch:
                if self._polling_done.is_set():
                    return
                new_data.clear()
                await new_data.wait()
                continue
            if len(batch) < batch_size and flush_interval > 0 and not self._polling_done.is_set():
                await self._wait_for_more(new_data, flush_interval, batch_size - len(batch))
                last_id, batch = self.buffer.read(sink.name, batch_size)
            self.buffer.mark_inflight(sink.name, last_id)
            try:
                await sink.send(batch)
            except SinkError as exc:
                delay = backoff.next()
                COUNTERS.inc("gateway_sink_retries_total", sink=sink.name)
                log.warning("%s: %s; retrying in %.1fs", sink.name, exc, delay)
                if self._polling_done.is_set():
                    return  # shutting down: the backlog stays in the buffer for the next start
                await sink.wait_ready(delay)
                continue
            backoff.reset()
            self.buffer.ack(sink.name, last_id)
            pace.sent(len(batch))

    def _max_rate(self, sink: Sink) -> float | None:
        settings = getattr(self.config.sinks, sink.name, None)
        return getattr(settings, "max_rate", None)

    async def _wait_for_more(self, new_data: asyncio.Event, seconds: float, wanted: int) -> None:
        """Wait until `wanted` more readings arrived or `seconds` passed (batching by size and
        by interval)."""
        deadline = time.monotonic() + seconds
        target = self._appended + wanted
        while ((remaining := deadline - time.monotonic()) > 0 and self._appended < target
               and not self._polling_done.is_set()):
            new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(new_data.wait(), remaining)


_READ_GRACE = 2.0  # seconds a stop waits for a read in flight before cancelling it


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed on the way (it is still pending)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Pace:
    """Spaces batches so that a sink sends at most `rate` readings per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._not_before = 0.0

    def sent(self, count: int) -> None:
        if self.rate:
            self._not_before = max(self._not_before, time.monotonic()) + count / self.rate

    async def wait(self) -> None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


