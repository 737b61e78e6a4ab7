"""Fault injection on real parts: nothing buffered is lost across broker, database, gateway
and PLC failures. Every poll reads the simulator's `poll_sequence` register, which counts the
reads that cover it: the values that reach the broker and the database must be 1..N with no
gap (duplicates are allowed: at-least-once)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.modbus import ModbusSimulator, register_map
from tests.fixtures_influx import InfluxV1Server
from tests.fixtures_mqtt import Mosquitto, MqttCollector
from tests.procs import eventually, free_port

pytestmark = pytest.mark.integration
SEQUENCE_TOPIC = "plant/stamping/line-1/press-01/poll_sequence"


class Rig:
    """The simulator (in this process, over a real socket), a `gateway run` subprocess, and
    what arrived at a persistent MQTT subscriber and in InfluxDB."""

    def __init__(self, tmp_path: Path, simulator: ModbusSimulator, broker: Mosquitto,
                 influx: InfluxV1Server | None, poll: str = "50ms",
                 buffer: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.simulator = simulator
        self.broker = broker
        self.influx = influx
        self.config_path = tmp_path / "gateway.yaml"
        press = next(m for m in register_map() if m["name"] == "press-01")
        sinks: dict[str, Any] = {"mqtt": {"url": broker.url, "qos": 1, "retain": False}}
        if influx is not None:
            sinks["influxdb"] = {"url": influx.url, "api": "v1", "database": influx.database,
                                 "flush_interval": "100ms", "timeout": "2s"}
        config = {
            "gateway": {"id": "sf-test", "site": "plant", "shutdown_timeout": "5s",
                        "buffer": {"path": str(tmp_path / "buffer.db"), **(buffer or {})},
                        "http": {"listen": f"127.0.0.1:{free_port()}"}},
            "devices": [{"name": "press-01", "driver": "modbus", "area": "stamping",
                         "line": "line-1", "poll_interval": poll,
                         "connection": {"host": "127.0.0.1", "port": simulator.port,
                                        "unit_id": 1, "timeout": "500ms"},
                         "reconnect_max_backoff": "1s", "tags": press["tags"]}],
            "sinks": sinks,
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_gateway(self) -> None:
        self.starts += 1
        log = open(self.tmp_path / f"gateway-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def signal_gateway(self, sig: int, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"gateway ignored signal {sig}:\n{self.logs()}") from None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.tmp_path.glob("gateway-*.log")))

    def status(self) -> dict[str, dict[str, Any]]:
        result = subprocess.run([sys.executable, "-m", "gateway", "status", "--json",
                                 "--config", str(self.config_path)],
                                capture_output=True, text=True, timeout=30, check=True)
        return {row["sink"]: row for row in json.loads(result.stdout)}

    def influx_sequence(self) -> list[int]:
        assert self.influx is not None
        rows = self.influx.query('SELECT "poll_sequence" FROM "press-01"')
        return [row["poll_sequence"] for row in rows if row.get("poll_sequence") is not None]


def mqtt_sequence(collector: MqttCollector) -> list[int]:
    return [m.payload["value"] for m in collector.on(SEQUENCE_TOPIC)
            if m.payload.get("quality") == "good"]


def gaps(values: list[int]) -> list[int]:
    """Sequence numbers missing between 1 and the highest one seen."""
    seen = set(values)
    return [n for n in range(1, max(seen, default=0) + 1) if n not in seen]


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(port=0, seed=11) as sim:
        yield sim


@pytest.fixture
def collector(fresh_mosquitto: Mosquitto,
              mqtt_collector: Callable[..., MqttCollector]) -> MqttCollector:
    return mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port, SEQUENCE_TOPIC,
                          persistent=True)


async def running_then_broker_killed(tmp_path: Path, simulator: ModbusSimulator,
                                     broker: Mosquitto, collector: MqttCollector) -> Rig:
    """A gateway whose readings flowed, then 3 s of backlog behind a SIGKILLed broker."""
    rig = Rig(tmp_path, simulator, broker, None)
    rig.start_gateway()
    await eventually(lambda: len(mqtt_sequence(collector)) >= 20, 30, "readings before")
    broker.kill()
    await asyncio.sleep(3)
    return rig


async def finish(rig: Rig, collector: MqttCollector, minimum: int) -> list[int]:
    """Let everything buffered arrive, stop the gateway cleanly, return what the broker got."""
    await eventually(lambda: len(set(mqtt_sequence(collector))) >= minimum, 60,
                     f"{minimum} sequence numbers at the broker")
    assert await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM) == 0, rig.logs()
    await asyncio.sleep(0.5)
    return mqtt_sequence(collector)


async def test_broker_killed_for_10s_loses_nothing(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        private_influxdb_v1: InfluxV1Server, collector: MqttCollector) -> None:
    rig = Rig(tmp_path, simulator, fresh_mosquitto, private_influxdb_v1)
    rig.start_gateway()
    await eventually(lambda: len(mqtt_sequence(collector)) >= 20, 30, "readings before")
    fresh_mosquitto.kill()
    await asyncio.sleep(10)
    during = simulator.value_of(1, "poll_sequence")
    fresh_mosquitto.start()
    values = await finish(rig, collector, during + 20)
    assert gaps(values) == [], rig.logs()
    assert during > 150, "the gateway kept polling while the broker was down"
    await eventually(lambda: gaps(rig.influx_sequence()) == [], 20, "InfluxDB complete")


async def test_database_stopped_for_30s_loses_nothing(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        private_influxdb_v1: InfluxV1Server, collector: MqttCollector) -> None:
    rig = Rig(tmp_path, simulator, fresh_mosquitto, private_influxdb_v1)
    rig.start_gateway()
    await eventually(lambda: len(rig.influx_sequence()) >= 20, 30, "readings in InfluxDB")
    private_influxdb_v1.stop()
    await asyncio.sleep(30)
    during = simulator.value_of(1, "poll_sequence")
    assert gaps(mqtt_sequence(collector)) == [], "MQTT is unaffected by the database outage"
    private_influxdb_v1.start()
    await eventually(lambda: len(set(rig.influx_sequence())) >= during, 60,
                     "the backlog in InfluxDB")
    assert await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM) == 0
    assert gaps(rig.influx_sequence()) == []


async def test_gateway_killed_while_the_broker_is_down_resumes_from_its_buffer(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        collector: MqttCollector) -> None:
    rig = await running_then_broker_killed(tmp_path, simulator, fresh_mosquitto, collector)
    await asyncio.to_thread(rig.signal_gateway, signal.SIGKILL)
    backlog = (await asyncio.to_thread(rig.status))["mqtt"]["depth"]
    assert backlog > 0
    killed_at = simulator.value_of(1, "poll_sequence")
    fresh_mosquitto.start()
    await asyncio.to_thread(collector.wait_subscribed)
    rig.start_gateway()
    values = await finish(rig, collector, killed_at + 20)
    # Everything buffered survives the SIGKILL. The one poll the PLC may have answered in the
    # instant of the kill never reached the buffer: only that number may be missing.
    assert gaps(values) in ([], [killed_at]), rig.logs()


async def test_plc_restart_turns_readings_bad_then_good_without_a_crash(
        tmp_path: Path, fresh_mosquitto: Mosquitto,
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port,
                               "plant/stamping/line-1/press-01/oil_temperature")
    port = free_port()
    first = ModbusSimulator(port=port, seed=3)
    await first.start()
    rig = Rig(tmp_path, first, fresh_mosquitto, None, poll="100ms")
    rig.start_gateway()
    try:
        def qualities() -> list[str]:
            return [m.payload["quality"] for m in collector.snapshot()]

        await eventually(lambda: "good" in qualities(), 30, "good readings")
        await first.stop()
        await eventually(lambda: qualities()[-1] == "bad", 15, "a bad reading")
        bad = [m.payload for m in collector.snapshot() if m.payload["quality"] == "bad"]
        assert len(bad) == 1, "an outage is published once, not on every retry"
        assert "unit 1" in bad[0]["error"] or "connect" in bad[0]["error"]
        await asyncio.sleep(2)
        second = ModbusSimulator(port=port, seed=3)
        async with second:
            await eventually(lambda: qualities()[-1] == "good", 15, "good readings again")
        assert rig.proc is not None and rig.proc.poll() is None, "the gateway kept running"
    finally:
        await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM)


async def test_full_buffer_drops_only_the_counted_oldest(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        collector: MqttCollector) -> None:
    rig = Rig(tmp_path, simulator, fresh_mosquitto, None, poll="10ms",
              buffer={"max_size": "192KiB"})
    rig.start_gateway()
    await eventually(lambda: len(mqtt_sequence(collector)) >= 20, 30, "readings before")
    fresh_mosquitto.kill()
    await eventually(lambda: rig.status()["mqtt"]["dropped"] > 0, 60, "the buffer to fill")
    await asyncio.sleep(1)
    fresh_mosquitto.start()
    down_to = simulator.value_of(1, "poll_sequence")
    await eventually(lambda: max(mqtt_sequence(collector)) >= down_to, 60, "the backlog")
    assert await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM) == 0, rig.logs()
    values = mqtt_sequence(collector)
    missing = gaps(values)
    dropped = (await asyncio.to_thread(rig.status))["mqtt"]["dropped"]
    assert missing, "some readings had to go"
    # The missing ones are one contiguous run (the oldest unsent), all of them counted: the
    # count covers every tag of those polls, so it is a multiple of the sequence gap.
    assert missing == list(range(missing[0], missing[-1] + 1))
    tags_per_poll = len(next(m for m in register_map() if m["name"] == "press-01")["tags"])
    # Up to two partly dropped polls at the edges, and the batch that failed with the broker:
    # its messages may still sit in paho's queue and arrive after the reconnect although the
    # buffer dropped (and counted) them meanwhile; so at most one batch (1000) more.
    batch = 1000
    assert dropped >= len(missing)
    assert dropped <= (len(missing) + 2) * tags_per_poll + batch, (dropped, len(missing))
    assert max(values) >= down_to


async def test_sigterm_during_a_backlog_saves_the_cursor_and_the_next_start_resumes(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        collector: MqttCollector) -> None:
    rig = await running_then_broker_killed(tmp_path, simulator, fresh_mosquitto, collector)
    started = time.monotonic()
    assert await asyncio.to_thread(rig.signal_gateway, signal.SIGTERM) == 0, rig.logs()
    assert time.monotonic() - started < 10, "the flush deadline bounds the shutdown"
    stopped_at = simulator.value_of(1, "poll_sequence")
    status = await asyncio.to_thread(rig.status)
    assert status["mqtt"]["depth"] > 0, "the backlog stays in the buffer"
    fresh_mosquitto.start()
    await asyncio.to_thread(collector.wait_subscribed)
    rig.start_gateway()
    values = await finish(rig, collector, stopped_at + 10)
    assert gaps(values) == [], rig.logs()
