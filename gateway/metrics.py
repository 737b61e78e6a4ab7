"""Process-wide counters (exported on /metrics by the status server)."""

from __future__ import annotations

import threading
from collections import Counter as _Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class Counters:
    """Named counters with label tuples; thread-safe, because paho calls back from its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: _Counter[tuple[str, tuple[tuple[str, str], ...]]] = _Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] += amount

    def get(self, name: str, **labels: str) -> int:
        """The counter's value; with no labels given, the sum over all label sets."""
        with self._lock:
            if labels:
                return self._values[(name, tuple(sorted(labels.items())))]
            return sum(v for (n, _), v in self._values.items() if n == name)

    def snapshot(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], int]:
        with self._lock:
            return dict(self._values)


class Gauges(Counters):
    """Named values that are set, not counted (a state, a size)."""

    def set(self, name: str, value: int, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = value


COUNTERS = Counters()
GAUGES = Gauges()

# Help texts of the counters the gateway increments (anything else is exported as untyped help).
COUNTER_HELP = {
    "gateway_device_polls_total": "Completed polls per device",
    "gateway_device_errors_total": "Device errors by kind (unreachable, exception, malformed, ...)",
    "gateway_readings_total": "Readings produced per device",
    "gateway_poll_overruns_total": "Poll slots skipped: a read took longer than the interval",
    "gateway_buffer_appended_total": "Readings written to the durable buffer",
    "gateway_buffer_dropped_total": "Readings dropped unsent because the buffer reached max_size",
    "gateway_buffer_lost_total": "Readings the buffer failed to store (a disk error), logged",
    "gateway_sink_sent_total": "Readings delivered and acknowledged per sink",
    "gateway_sink_failures_total": "Failed deliveries per sink",
    "gateway_sink_retries_total": "Batches retried per sink",
    "gateway_sink_dropped_total": "Readings a sink dropped, by reason (rejected by the far "
    "side, not_finite, invalid_name, array)",
    "gateway_opcua_buffer_dropped_total": "OPC UA notifications dropped oldest-first because "
    "more than max_buffered arrived between two reads",
    "gateway_sink_possible_duplicates_total": "Readings re-sent after a crash (at-least-once)",
    "gateway_buffer_damaged_total": "Readings lost to a damaged buffer, by cause (file: not "
    "salvaged from an unreadable file, wal: missing from a damaged or deleted write-ahead log, "
    "row: a row that does not decode, skipped)",
    "gateway_buffer_salvaged_total": "Readings saved from a damaged buffer file into a fresh one",
    "gateway_buffer_degraded_total": "Times the buffer could not write its file (disk full, I/O "
    "error) and went on in memory",
}
GAUGE_HELP = {
    "gateway_buffer_degraded": "1 while the buffer cannot write its file and holds new readings "
    "in memory",
    "gateway_buffer_memory_only_readings": "Readings only memory holds (the file could not be "
    "written)",
}


class CountersCollector:
    """Exports `Counters` to a prometheus-client registry."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for (name, labels), value in sorted(self.counters.snapshot().items()):
            base = name.removesuffix("_total")
            if base not in families:
                families[base] = CounterMetricFamily(
                    base, COUNTER_HELP.get(name, name), labels=[k for k, _ in labels])
            families[base].add_metric([v for _, v in labels], value)
        yield from families.values()


class GaugesCollector:
    """Exports `Gauges` to a prometheus-client registry."""

    def __init__(self, gauges: Gauges) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for (name, labels), value in sorted(self.gauges.snapshot().items()):
            if name not in families:
                families[name] = GaugeMetricFamily(name, GAUGE_HELP.get(name, name),
                                                   labels=[k for k, _ in labels])
            families[name].add_metric([v for _, v in labels], value)
        yield from families.values()


def new_registry(counters: Counters = COUNTERS, gauges: Gauges = GAUGES) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(CountersCollector(counters))
    registry.register(GaugesCollector(gauges))
    return registry
