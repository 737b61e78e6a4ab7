"""An example driver plugin: the edge box's own health (load, memory, uptime) from /proc.

It is small on purpose: the same shape as a real protocol driver (a config model validated by
the gateway, async connect/read/close, bad readings instead of exceptions for one broken tag).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.sdk import (
    DeviceConfig,
    DeviceUnreachable,
    Driver,
    Reading,
    StrictModel,
    bad_reading,
    utc_now,
)

Metric = Literal["load1", "load5", "load15", "mem_available_mib", "mem_used_percent", "uptime_s"]
UNITS: dict[str, str | None] = {"load1": None, "load5": None, "load15": None,
                                "mem_available_mib": "MiB", "mem_used_percent": "%",
                                "uptime_s": "s"}


class HostStatsTag(StrictModel):
    name: str = Field(min_length=1, description="Tag name (a topic level, an InfluxDB field)")
    metric: Metric = Field(description="Which figure of the host to publish")


class HostStatsConnection(StrictModel):
    proc: str = Field("/proc", description="Where the proc filesystem is mounted")


class HostStatsConfig(DeviceConfig):
    driver: Literal["hoststats"]
    connection: HostStatsConnection = Field(default_factory=HostStatsConnection)
    tags: list[HostStatsTag] = Field(min_length=1)


class HostStatsDriver(Driver):
    config_model = HostStatsConfig

    def __init__(self, config: DeviceConfig) -> None:
        super().__init__(config)
        assert isinstance(config, HostStatsConfig)
        self.settings = config
        self.proc = Path(config.connection.proc)

    def tag_names(self) -> list[str]:
        return [tag.name for tag in self.settings.tags]

    def tag_units(self) -> dict[str, str | None]:
        return {tag.name: UNITS[tag.metric] for tag in self.settings.tags}

    async def connect(self) -> None:
        if not (self.proc / "loadavg").is_file():
            raise DeviceUnreachable(f"no proc filesystem at {self.proc}", self.name)

    async def read(self) -> list[Reading]:
        try:
            figures = self._figures()
        except OSError as exc:
            raise DeviceUnreachable(f"cannot read {self.proc}: {exc}", self.name) from exc
        now = utc_now()
        readings = []
        for tag in self.settings.tags:
            unit = UNITS[tag.metric]
            value = figures.get(tag.metric)
            if value is None:
                readings.append(bad_reading(self.name, tag.name, f"{tag.metric} unavailable",
                                            unit, now))
            else:
                readings.append(Reading(device=self.name, tag=tag.name, value=value,
                                        source_ts=now, unit=unit))
        return readings

    async def close(self) -> None:
        pass

    def _figures(self) -> dict[str, float]:
        load = (self.proc / "loadavg").read_text().split()
        figures = {"load1": float(load[0]), "load5": float(load[1]), "load15": float(load[2]),
                   "uptime_s": float((self.proc / "uptime").read_text().split()[0])}
        meminfo = {line.split(":")[0]: int(line.split()[1])
                   for line in (self.proc / "meminfo").read_text().splitlines() if ":" in line}
        if "MemAvailable" in meminfo and "MemTotal" in meminfo:
            figures["mem_available_mib"] = meminfo["MemAvailable"] / 1024
            figures["mem_used_percent"] = round(
                100 * (1 - meminfo["MemAvailable"] / meminfo["MemTotal"]), 2)
        return figures
