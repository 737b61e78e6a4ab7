"""The replay bench (issue 18), small: the backlog it writes is what an outage leaves (both
sinks pending, device cycles in order, all in the past), and a short run drains all of it to a
real mosquitto and VictoriaMetrics and reports a CPU cost per reading against the live path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.replay import SINKS, fill_backlog, main
from gateway.buffer import DurableBuffer
from gateway.metrics import Counters, Gauges


def test_the_backlog_is_pending_for_both_sinks_in_cycles_and_in_the_past(
        tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    fill_backlog(path, ["dev-0", "dev-1"], 2_600)  # ten cycles of 250; the rest is not a cycle
    buffer = DurableBuffer(path, SINKS, counters=Counters(), gauges=Gauges())
    try:
        for sink in SINKS:
            assert buffer.depth(sink) == 2_500
        _, readings = buffer.read("mqtt", 10_000)
    finally:
        buffer.close()
    assert len(readings) == 2_500
    per_device: dict[str, list[datetime]] = {}
    for reading in readings:
        per_device.setdefault(reading.device, []).append(reading.source_ts)
    assert sorted(per_device) == ["dev-0", "dev-1"]
    for stamps in per_device.values():
        assert len(stamps) == 1_250 and stamps == sorted(stamps)
        assert max(stamps) <= datetime.now(UTC) - timedelta(seconds=59)


@pytest.mark.integration
def test_a_short_replay_drains_everything_and_reports_both_costs(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    assert main(["--readings", "100000", "--seconds", "2", "--timeout", "120",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    replay = result["replay"]
    assert replay["backlog"] == 100_000
    assert replay["influx_drained"] > 0 and replay["drained_per_s"] > 0
    assert replay["us_per_reading"] > 0 and result["live_us_per_reading"] > 0
    assert result["replay_vs_live"] == pytest.approx(
        replay["us_per_reading"] / result["live_us_per_reading"], rel=0.01)
    assert result["live"]["readings_per_s"] > 0
