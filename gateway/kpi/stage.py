"""The KPI stage of the pipeline: the pure engine fed with every driver reading, its figures
published every `kpi_interval` as readings of their devices (through the buffer to every sink),
and its accumulated state saved in the buffer's database so a restart resumes the shift."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.base import Driver
from gateway.kpi.config import KpiSettings
from gateway.kpi.engine import KpiEngine, MachineKpi, ShiftFigures
from gateway.kpi.store import KpiStateStore
from gateway.models import Reading, utc_now

log = logging.getLogger(__name__)
TREND_POINTS = 720
"""Points of the current shift's trend kept per device (one per tick: 2 h at 10 s; beyond that
every other point is dropped, so the trend still spans the whole shift)."""


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
        self._latest: dict[str, tuple[datetime, ShiftFigures]] = {}
        self._trend: dict[str, deque[tuple[datetime, ShiftFigures]]] = {}

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

    def tick(self, now: datetime | None = None) -> list[Reading]:
        """The figures to publish now (and at the end of a shift that ended); saves the state."""
        now = now or utc_now()
        figures = self.engine.tick(now)
        self.store.save(self.engine.snapshot())
        self._remember(now)
        return figures

    def _remember(self, now: datetime) -> None:
        """The figures of this tick for the views: the latest per device and the shift's trend."""
        for device in self.engine.devices:
            figures = self.engine.current_figures(device)
            if figures is None:
                self._latest.pop(device, None)
                self._trend.pop(device, None)
                continue
            self._latest[device] = (now, figures)
            trend = self._trend.get(device)
            if trend is None or (trend and trend[-1][1].shift != figures.shift):
                trend = self._trend[device] = deque()
            if len(trend) >= TREND_POINTS:
                self._trend[device] = trend = deque(list(trend)[::2])
            trend.append((now, figures))

    # -- what the status page reads (plain, JSON-able dicts; nothing here changes the engine) --

    def current(self, device: str) -> dict[str, Any] | None:
        """The current shift's figures of a device as of the last tick (None: none yet, or
        outside every shift)."""
        latest = self._latest.get(device)
        return None if latest is None else {"ts": _iso(latest[0]), **asdict(latest[1])}

    def history(self, device: str) -> list[dict[str, Any]]:
        """The current shift's trend so far, oldest first: ts, oee and its three factors."""
        return [{"ts": _iso(ts), "oee": f.oee, "availability": f.availability,
                 "performance": f.performance, "quality": f.quality}
                for ts, f in self._trend.get(device, ())]

    def recent(self, device: str) -> list[dict[str, Any]]:
        """The final figures of the last ended shifts, newest first (since the gateway started)."""
        if device not in self.engine.devices:
            return []
        return [asdict(f) for f in self.engine.recent_shifts(device)]

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


def _iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")
