"""The gateway as one job: it builds the buffer, the pipeline, the device supervisor, one
delivery loop per sink and the status server, runs them in one TaskGroup until `stop` is set,
then stops polling, flushes within a deadline and closes everything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers.base import Driver
from gateway.buffer import DurableBuffer
from gateway.commands import CommandRouter
from gateway.config import GatewayConfig, load_config
from gateway.delivery import SinkDelivery
from gateway.errors import ConfigError
from gateway.http_server import StatusServer
from gateway.kpi.stage import KpiStage
from gateway.pipeline import Pipeline
from gateway.sinks import DeviceContext, Sink, SinkEnvironment
from gateway.sinks.registry import load_sink
from gateway.state import GatewayState
from gateway.supervisor import DeviceSupervisor, build_drivers

log = logging.getLogger(__name__)


def device_contexts(config: GatewayConfig) -> dict[str, DeviceContext]:
    return {d.name: DeviceContext(gateway=config.gateway.id, site=config.gateway.site,
                                  area=d.area, line=d.line, device=d.name,
                                  value_types=d.value_types(),
                                  enums={t.name: t.enum for t in d.declared_tags() if t.enum})
            for d in config.devices}


def build_sinks(config: GatewayConfig) -> list[Sink]:
    """The sinks the config names, each built by the class registered for its type."""
    environment = SinkEnvironment(config.gateway.id, config.gateway.site,
                                  device_contexts(config),
                                  Path(config.gateway.buffer.path))
    return [load_sink(settings.type or name).from_settings(name, settings, environment)
            for name, settings in config.sinks.items()]


def _deadbands(drivers: Sequence[Driver]) -> dict[tuple[str, str], float]:
    return {(d.name, tag): band for d in drivers for tag, band in d.deadbands().items()}


class Gateway:
    """Runs the whole job until `stop` is set."""

    def __init__(self, config: GatewayConfig, sinks: Sequence[Sink] | None = None,
                 drivers: Sequence[Driver] | None = None, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.state = GatewayState(config, list(build_sinks(config) if sinks is None else sinks))
        self._drivers = list(build_drivers(config.devices) if drivers is None else drivers)
        self.devices: DeviceSupervisor | None = None
        self.status_server: StatusServer | None = None

    @property
    def config(self) -> GatewayConfig:
        return self.state.config

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.config.gateway.buffer
        sinks = self.state.sinks
        buffer = self.state.buffer = DurableBuffer(settings.path, [s.name for s in sinks],
                                                   settings.max_size, settings.sync)
        polling_done = asyncio.Event()
        deliveries: list[SinkDelivery] = []

        def wake_sinks() -> None:
            for delivery in deliveries:
                delivery.new_data.set()

        kpi = self.state.kpi = self._kpi_stage()
        pipeline = Pipeline(buffer, self.state.tags, _deadbands(self._drivers), wake_sinks,
                            [kpi.observe] if kpi is not None else [])
        deliveries += [SinkDelivery(s, buffer, lambda: pipeline.appended, polling_done)
                       for s in sinks]
        self.devices = DeviceSupervisor(self.state, pipeline.publish)
        self._pipeline = pipeline
        router = CommandRouter(self.devices.device, self.devices.is_up)
        try:
            for sink in sinks:
                if sink.wants_commands:
                    sink.commands = router
                await sink.start()
            await self._start_status_server()
            await self._run_tasks(stop, deliveries, polling_done, kpi)
        finally:
            if self.status_server is not None:
                await self.status_server.close()
            for sink in sinks:
                await sink.close()
            pipeline.store()
            buffer.close()

    def _kpi_stage(self) -> KpiStage | None:
        """Edge KPIs, when a device has an `oee:` block; their state lives in the buffer's file."""
        if not any(d.config.oee is not None for d in self._drivers):
            return None
        return KpiStage(self.config.gateway, self._drivers, self.config.gateway.buffer.path)

    async def _start_status_server(self) -> None:
        self.status_server = None
        if self.config.gateway.http.enabled:
            self.status_server = StatusServer(self.state, self.config.gateway.http.listen,
                                              self.config.gateway.http.token,
                                              reload=self.reload_from_file)
            await self.status_server.start()

    async def _run_tasks(self, stop: asyncio.Event, deliveries: list[SinkDelivery],
                         polling_done: asyncio.Event, kpi: KpiStage | None) -> None:
        assert self.devices is not None
        kpi_stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            self.devices.start_all(group, self._drivers)
            kpi_task = (group.create_task(kpi.run(self._pipeline.publish, kpi_stop), name="kpi")
                        if kpi is not None else None)
            senders = [group.create_task(d.run(), name=f"sink:{d.sink.name}")
                       for d in deliveries]
            await stop.wait()
            timeout = self.config.gateway.shutdown_timeout
            log.info("stopping: polling ends, flushing sinks (up to %.1fs)", timeout)
            await self.devices.stop_all()
            kpi_stop.set()
            if kpi_task is not None:
                await kpi_task
            self._pipeline.store()
            polling_done.set()
            for delivery in deliveries:
                delivery.new_data.set()
            pending: set[asyncio.Task[None]] = set()
            if senders:
                _, pending = await asyncio.wait(senders, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown deadline reached; the unsent readings stay in the buffer")

    async def reload_from_file(self, named: str | None = None) -> dict[str, Any]:
        """Re-read the config file (SIGHUP, `gateway reload`); an invalid file is refused with
        its errors and the running config stays. A gateway reloads only the file it was started
        with: `named` (the file `gateway reload --config` was given) must be that file."""
        if self.config_path is None:
            return {"ok": False, "errors": ["this gateway was not started from a file"]}
        refused = other_file(self.config_path, named)
        if refused:
            return {"ok": False, "errors": [refused]}
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, the running config stays:\n%s", exc.render())
            return {"ok": False, "errors": [str(p) for p in exc.problems]}
        return {"ok": True, "changes": await self.reload(config)}

    async def reload(self, config: GatewayConfig) -> dict[str, list[str]]:
        """Apply a new config's devices without a restart: removed ones stop, added ones start,
        changed ones restart. Buffered readings are untouched. Changes to `gateway` or `sinks`
        need a restart (logged). Reloads run one at a time (however many arrive at once), so
        every device ends up with exactly one task."""
        devices = self.devices
        if devices is None:
            return {"added": [], "removed": [], "changed": []}
        async with devices.lock:
            if devices.closed:
                return {"added": [], "removed": [], "changed": []}
            return await self._apply(devices, config)

    async def _apply(self, devices: DeviceSupervisor,
                     config: GatewayConfig) -> dict[str, list[str]]:
        old = {d.name: d for d in self.config.devices}
        new = {d.name: d for d in config.devices}
        changes = {
            "added": [n for n in new if n not in old],
            "removed": [n for n in old if n not in new],
            "changed": [n for n in new if n in old and new[n] != old[n]],
        }
        for name in changes["removed"] + changes["changed"]:
            await devices.stop(name)
            self.state.health.pop(name, None)
            self.state.tags.forget(name)
        if config.gateway != self.config.gateway or config.sinks != self.config.sinks:
            log.warning("reload: changes to the gateway or sinks sections apply after a restart")
        self.state.config = self.config.model_copy(update={"devices": config.devices})
        contexts = device_contexts(self.config)
        for sink in self.state.sinks:
            sink.update_contexts(contexts)
        started = build_drivers(new[n] for n in changes["added"] + changes["changed"])
        self._pipeline.set_deadbands(_deadbands([*devices.drivers.values(), *started]))
        for driver in started:
            devices.start(driver)
        if self.state.kpi is not None:
            self.state.kpi.replace_drivers(devices.drivers.values())
        log.info("reload: added %s, removed %s, changed %s", changes["added"] or "none",
                 changes["removed"] or "none", changes["changed"] or "none")
        return changes


def other_file(running: str, named: str | None) -> str | None:
    """Why a reload of `named` is refused by a gateway started with `running` (None: same
    file, or no file named)."""
    if named is None or Path(named).resolve() == Path(running).resolve():
        return None
    return (f"this gateway runs {Path(running).resolve()} and reloads only that file, not "
            f"{named}; edit that file and reload, or restart the gateway with "
            f"`gateway run --config {named}`")
