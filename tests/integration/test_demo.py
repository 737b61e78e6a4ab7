"""`gateway demo` runs simulators, an embedded broker and the gateway with no outside service."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from simulators.opcua.address_space import gateway_tags
from tests.fixtures_influx import InfluxV1Server
from tests.procs import free_port

pytestmark = pytest.mark.integration


def run_demo(*extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "4", "--mqtt-port", "0",
         "--http-port", "0", "--no-live", *extra],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_demo_publishes_every_simulated_tag_to_its_embedded_broker() -> None:
    output = run_demo()
    received = int(re.search(r"the broker received (\d+) messages", output)[1])  # type: ignore[index]
    assert received >= 3 * 32, output[-2000:]  # 32 Modbus tags, polled every second for 4 s
    assert re.search(r"\((4[3-9]|[5-9]\d) topics\)", output), "every tag has its topic"


def test_demo_includes_the_opcua_cnc() -> None:
    output = run_demo("--opcua-port", str(free_port()))
    cnc_tags = len(gateway_tags())
    assert f"cnc-01: {cnc_tags}," in output, output[-2000:]  # every CNC variable at the broker
    assert "OPC UA CNC on opc.tcp://127.0.0.1:" in output


def test_demo_also_writes_to_influxdb_when_asked(influxdb_v1: InfluxV1Server) -> None:
    run_demo("--influx-url", influxdb_v1.url, "--influx-api", "v1")
    rows = influxdb_v1.query('SELECT count("cycle_counter") FROM "press-01"')
    assert rows and rows[0]["count"] >= 3


def test_demo_oee_of_press_and_packer_moves_within_a_minute() -> None:
    """The demo's machines run on their seeded schedules and publish OEE every 5 s."""
    import time

    from tests.fixtures_mqtt import MqttCollector

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--duration", "40", "--mqtt-port", str(port),
         "--http-port", "0", "--no-live"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)
    collector = None
    try:
        deadline = time.monotonic() + 30
        while collector is None:
            try:
                collector = MqttCollector("127.0.0.1", port, "demo/+/+/+/oee")
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline and demo.poll() is None, "no demo broker"
                time.sleep(0.5)

        def moving(messages: list[Any]) -> bool:
            values: dict[str, set[float]] = {"press-01": set(), "packer-03": set()}
            for m in messages:
                device = m.topic.split("/")[3]
                if device in values and m.payload.get("value") is not None:
                    values[device].add(m.payload["value"])
            return all(len(v) >= 2 for v in values.values())

        collector.wait_for(moving, timeout=45, what="two different OEE values per machine")
    finally:
        if collector is not None:
            collector.close()
        demo.terminate()
        demo.wait(20)
