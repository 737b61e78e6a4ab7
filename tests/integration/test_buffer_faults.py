"""The buffer on a real 2 MiB tmpfs that fills up: no exception, readings and acks kept in
memory, written when space returns, nothing lost; and `gateway run` on such a disk."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer
from gateway.errors import BufferError
from gateway.metrics import Counters, Gauges
from gateway.models import Reading
from simulators.modbus import ModbusSimulator
from simulators.twin.drill import fill as fill_to_the_last_byte
from tests.fixtures_influx import InfluxV1Server
from tests.fixtures_mqtt import Mosquitto, MqttCollector
from tests.integration.test_store_and_forward import SEQUENCE_TOPIC, Rig, gaps, mqtt_sequence
from tests.procs import eventually

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 24, tzinfo=UTC)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs; the tests run as root, in CI too)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left (as the drill's disk-full fault does)."""
    filler = disk / "filler"
    fill_to_the_last_byte(filler)
    return filler


class Feed:
    """Polls into the buffer and delivers like the runtime: read, mark in flight, ack. The
    `lagging` sink delivers only when told (its backlog makes the file grow)."""

    def __init__(self, buffer: DurableBuffer, lagging: str = "influxdb") -> None:
        self.buffer = buffer
        self.lagging = lagging
        self.appended = 0
        self.delivered: dict[str, list[object]] = {sink: [] for sink in buffer.sinks}

    def step(self, rows: int = 100, lagging_too: bool = False) -> None:
        self.buffer.append([Reading(device="press-01", tag="seq", value=self.appended + i,
                                    source_ts=T0 + timedelta(milliseconds=self.appended + i))
                            for i in range(rows)])
        self.appended += rows
        for sink in self.buffer.sinks:
            if sink != self.lagging or lagging_too:
                self.deliver(sink)

    def deliver(self, sink: str, limit: int = 1000) -> int:
        last, batch = self.buffer.read(sink, limit)
        if batch:
            self.buffer.mark_inflight(sink, last)
            self.delivered[sink] += [r.value for r in batch]
            self.buffer.ack(sink, last)
        return len(batch)

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 30.0,
              rows: int = 100) -> None:
        """Keep polling until `condition` holds (bounded)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.step(rows)
            time.sleep(0.02)

    def drain(self, sink: str) -> None:
        for _ in range(100_000):
            if not self.deliver(sink):
                return
        raise AssertionError(f"{sink} never ran dry")


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_full_disk_keeps_readings_in_memory_and_writes_them_when_space_returns(
        tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    counters, gauges = Counters(), Gauges()
    buffer = DurableBuffer(tiny_disk / "buffer.db", ["mqtt", "influxdb"], counters=counters,
                           gauges=gauges)
    feed = Feed(buffer)
    for _ in range(20):
        feed.step()
    filler = fill(tiny_disk)
    feed.until(lambda: buffer.degraded is not None, "the buffer to notice the full disk")
    assert "full" in (buffer.degraded or "")
    assert gauges.get("gateway_buffer_degraded") == 1
    for _ in range(30):  # polling and the sink that keeps up go on, from memory
        feed.step()
    assert feed.delivered["mqtt"] == list(range(feed.appended))
    assert gauges.get("gateway_buffer_memory_only_readings") > 0
    assert buffer.depth("influxdb") == feed.appended
    filler.unlink()
    feed.until(lambda: buffer.degraded is None, "writing to work again")
    feed.drain("influxdb")
    feed.drain("mqtt")
    assert feed.delivered["influxdb"] == list(range(feed.appended))
    assert feed.delivered["mqtt"] == list(range(feed.appended))
    assert len(warnings_about(caplog, "cannot write")) == 1
    assert len(warnings_about(caplog, "works again")) == 1
    assert counters.get("gateway_buffer_dropped_total") == 0
    assert counters.get("gateway_buffer_degraded_total") == 1
    assert gauges.get("gateway_buffer_degraded") == 0
    buffer.close()
    reopened = DurableBuffer(tiny_disk / "buffer.db", ["mqtt", "influxdb"], counters=counters)
    assert reopened.depth("mqtt") == reopened.depth("influxdb") == 0
    assert counters.get("gateway_buffer_lost_total") == 0
    assert counters.get("gateway_buffer_damaged_total") == 0  # the mark agrees with the file
    reopened.close()


def test_acks_on_a_full_disk_are_kept_and_written_later(tiny_disk: Path) -> None:
    buffer = DurableBuffer(tiny_disk / "buffer.db", ["mqtt", "influxdb"], counters=Counters())
    feed = Feed(buffer)
    filler = fill(tiny_disk)
    feed.until(lambda: buffer.degraded is not None, "the full disk")
    feed.drain("influxdb")  # acked while nothing can be written
    filler.unlink()
    feed.until(lambda: buffer.degraded is None, "writing to work again")
    feed.drain("influxdb")
    buffer.close()
    reopened = DurableBuffer(tiny_disk / "buffer.db", ["mqtt", "influxdb"], counters=Counters())
    assert reopened.depth("influxdb") == 0 and reopened.depth("mqtt") == 0
    reopened.close()


def test_past_the_memory_limit_the_oldest_are_dropped_and_counted(
        tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    counters = Counters()
    buffer = DurableBuffer(tiny_disk / "buffer.db", ["mqtt", "influxdb"], counters=counters,
                           memory_limit=1000)
    feed = Feed(buffer)
    filler = fill(tiny_disk)
    feed.until(lambda: buffer.degraded is not None, "the full disk")
    for _ in range(30):
        feed.step()
    dropped = counters.get("gateway_buffer_dropped_total", sink="influxdb")
    assert dropped >= 2000
    assert buffer.dropped("influxdb") == dropped
    assert counters.get("gateway_buffer_dropped_total", sink="mqtt") == 0
    assert any("dropping the oldest" in r.getMessage() for r in caplog.records)
    filler.unlink()
    feed.until(lambda: buffer.degraded is None, "writing to work again")
    feed.drain("influxdb")
    got = feed.delivered["influxdb"]
    assert got == sorted(set(got))
    dropped = counters.get("gateway_buffer_dropped_total", sink="influxdb")
    assert len(got) + dropped == feed.appended  # each reading delivered or counted
    assert feed.delivered["mqtt"] == list(range(feed.appended))
    buffer.close()


def test_a_read_only_filesystem_is_a_one_line_error(tiny_disk: Path) -> None:
    buffer = DurableBuffer(tiny_disk / "buffer.db", ["mqtt"], counters=Counters())
    Feed(buffer).step()
    buffer.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(BufferError, match="cannot") as error:
        DurableBuffer(tiny_disk / "buffer.db", ["mqtt"], counters=Counters())
    message = str(error.value)
    assert "\n" not in message and "gateway.buffer.path" in message


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(port=0, seed=17) as sim:
        yield sim


async def test_gateway_run_on_a_2mib_disk_that_fills_up_keeps_delivering(
        tmp_path: Path, tiny_disk: Path, simulator: ModbusSimulator,
        fresh_mosquitto: Mosquitto, private_influxdb_v1: InfluxV1Server,
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port, SEQUENCE_TOPIC,
                               persistent=True)
    rig = Rig(tmp_path, simulator, fresh_mosquitto, private_influxdb_v1, poll="20ms",
              buffer={"path": str(tiny_disk / "buffer.db")})
    rig.start_gateway()
    try:
        await eventually(lambda: len(mqtt_sequence(collector)) >= 20, 30, "readings before")
        filler = fill(tiny_disk)
        await eventually(lambda: "cannot write" in rig.logs(), 30, "the full-disk warning")
        full_at = max(mqtt_sequence(collector))
        await eventually(lambda: max(mqtt_sequence(collector)) > full_at + 100, 30,
                         "delivery from memory while the disk is full")
        await eventually(lambda: max(rig.influx_sequence(), default=0) > full_at + 100, 30,
                         "InfluxDB delivery while the disk is full")
        filler.unlink()
        await eventually(lambda: "works again" in rig.logs(), 30, "writing to resume")
        resumed_at = simulator.value_of(1, "poll_sequence")
        await eventually(lambda: max(mqtt_sequence(collector)) > resumed_at + 100, 30,
                         "delivery after the disk has space again")
        assert rig.proc is not None and rig.proc.poll() is None, rig.logs()
    finally:
        code = await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM)
    assert code == 0, rig.logs()
    assert "Traceback" not in rig.logs()
    assert gaps(mqtt_sequence(collector)) == [], rig.logs()
    await eventually(lambda: gaps(rig.influx_sequence()) == [], 30, "InfluxDB complete")
