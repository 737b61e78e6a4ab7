"""The KPI stage of the pipeline: the pure engine fed with every driver reading, its figures
published every `kpi_interval` as readings of their devices (through the buffer to every sink),
and its accumulated state saved in the buffer's database so a restart resumes the shift."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from drivers.base import Driver
from gateway.kpi.config import KpiSettings
from gateway.kpi.engine import KpiEngine, MachineKpi
from gateway.kpi.store import KpiStateStore
from gateway.models import Reading, utc_now

log = logging.getLogger(__name__)


def machines(drivers: Iterable[Driver]) -> list[MachineKpi]:
    """One machine per device with an `oee:` block. A polled running tag not read again within
    three intervals is unknown; a pushed one (OPC UA subscription) holds until it changes."""
    return [MachineKpi(d.name, d.config.oee, d.config.tag_types(),
                       None if d.pushes else 3 * d.config.poll_interval)
            for d in drivers if d.config.oee is not None]


class KpiStage:
    """Owns the engine and its store; `observe` sees every reading before any deadband."""

    def __init__(self, settings: KpiSettings, drivers: Iterable[Driver],
                 store_path: str | Path) -> None:
        self.settings = settings
        self.store = KpiStateStore(store_path)
        self.engine = self._engine(drivers, self.store.load())

    def _engine(self, drivers: Iterable[Driver], restored: Mapping[str, Any]) -> KpiEngine:
        engine = KpiEngine(self.settings, machines(drivers), restored=restored)
        for problem in engine.restore_problems:
            log.warning("KPI: %s", problem)
        return engine

    @property
    def active(self) -> bool:
        return bool(self.engine.devices)

    def observe(self, readings: Sequence[Reading]) -> None:
        if self.engine.devices:
            self.engine.observe(readings, utc_now())

    def replace_drivers(self, drivers: Iterable[Driver]) -> None:
        """A reload changed the devices: keep every machine's accumulated figures."""
        self.engine = self._engine(drivers, self.engine.snapshot())

    def tick(self) -> list[Reading]:
        figures = self.engine.tick(utc_now())
        self.store.save(self.engine.snapshot())
        return figures

    async def run(self, publish: Callable[[Sequence[Reading]], None],
                  stop: asyncio.Event) -> None:
        """Publish the figures every `kpi_interval` until `stop`, then once more and save."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.kpi_interval)
                except TimeoutError:
                    pass
                if self.engine.devices:
                    publish(self.tick())
        finally:
            self.store.save(self.engine.snapshot())
            self.store.close()
