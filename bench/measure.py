"""What the benchmarks measure: a process's CPU and memory, rates, latency percentiles."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in KiB."""
    values = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


@dataclass
class Usage:
    cores: float
    rss_mib: float
    peak_rss_mib: float
    rss_start_mib: float


class ProcessSampler:
    """CPU cores used by a process between `start()` and `stop()`, and its RSS."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._rss0 = 0

    def start(self) -> None:
        self._cpu0, self._t0 = cpu_seconds(self.pid), time.monotonic()
        self._rss0 = memory_kib(self.pid)[0]

    def stop(self) -> Usage:
        cores = (cpu_seconds(self.pid) - self._cpu0) / max(1e-9, time.monotonic() - self._t0)
        rss, peak = memory_kib(self.pid)
        return Usage(round(cores, 3), round(rss / 1024, 1), round(peak / 1024, 1),
                     round(self._rss0 / 1024, 1))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_mib(pid: int | str = "self") -> dict[str, int]:
    """RssAnon and RssFile of a process (this one by default), MiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("RssAnon", "RssFile")):
                found[line.split(":")[0][3:]] = int(line.split()[1]) // 1024
    return found
