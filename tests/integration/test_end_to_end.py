"""`gateway run` as a subprocess, against the Modbus simulator, a real mosquitto and a real
database: every tag of every simulated machine arrives with the value the simulator holds."""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.modbus import ModbusSimulator
from tests.fixtures_influx import InfluxV1Server, VictoriaMetricsServer
from tests.fixtures_mqtt import Mosquitto, MqttCollector
from tests.procs import eventually

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "modbus-demo.yaml"


def demo_config_for(tmp_path: Path, modbus_port: int, mqtt_url: str,
                    influx: dict[str, Any] | None) -> Path:
    """config/modbus-demo.yaml as shipped, pointed at this test's ports."""
    config = yaml.safe_load(DEMO_CONFIG.read_text())
    for device in config["devices"]:
        device["connection"]["port"] = modbus_port
        device["poll_interval"] = "200ms"
        # A busy CI box can hold an answer past the shipped 1 s: a timeout there would make a
        # tag bad for one poll, which is not what these tests are about.
        device["connection"]["timeout"] = "5s"
    config["gateway"]["buffer"] = {"path": str(tmp_path / "buffer.db")}
    config["gateway"].pop("http", None)
    config["sinks"]["mqtt"]["url"] = mqtt_url
    if influx is None:
        config["sinks"].pop("influxdb", None)
    else:
        config["sinks"]["influxdb"] = influx
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_gateway(config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = open(tmp_path / "gateway.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)


def stop_gateway(proc: subprocess.Popen[bytes], tmp_path: Path) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        code = -9
    log = (tmp_path / "gateway.log").read_text(errors="replace")
    assert code == 0, f"gateway exited with {code}:\n{log[-3000:]}"
    return log


def expected_tags(config: Path) -> dict[tuple[str, str], tuple[int, str]]:
    """(device, tag) -> (unit id, tag) of every tag in the config."""
    data = yaml.safe_load(config.read_text())
    return {(d["name"], t["name"]): (d["connection"]["unit_id"], t["name"])
            for d in data["devices"] for t in d["tags"]}


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, int | float):
        return math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9)
    return bool(actual == expected)


def latest_by_topic(collector: MqttCollector) -> dict[str, Any]:
    return {m.topic: m.payload for m in collector.snapshot()}


def topic_of(config: dict[str, Any], device: dict[str, Any], tag: str) -> str:
    return "/".join(part for part in (config["gateway"]["site"], device["area"], device["line"],
                                      device["name"], tag) if part)


async def test_gateway_run_delivers_every_simulated_tag_to_mqtt_and_influxdb_v1(
        tmp_path: Path, mosquitto: Mosquitto, influxdb_v1: InfluxV1Server,
        mqtt_collector: Any) -> None:
    influx = {"url": influxdb_v1.url, "api": "v1", "database": influxdb_v1.database,
              "flush_interval": "200ms"}
    simulator = ModbusSimulator(port=0, seed=5)
    async with simulator:
        await asyncio.sleep(0.3)
        simulator.freeze(True)  # exact values to compare; poll_sequence still counts
        config_path = demo_config_for(tmp_path, simulator.port, mosquitto.url, influx)
        config = yaml.safe_load(config_path.read_text())
        collector = mqtt_collector(mosquitto.host, mosquitto.port,
                                   f"{config['gateway']['site']}/#")
        topics = {topic_of(config, d, t["name"]): (d, t) for d in config["devices"]
                  for t in d["tags"]}
        proc = start_gateway(config_path, tmp_path)
        try:
            await eventually(lambda: topics.keys() <= latest_by_topic(collector).keys(), 30,
                             "a message on every tag's topic")
            # The latest message of every tag good (one slow answer on a busy box may have
            # made a tag bad for one poll: the next one is good again).
            await eventually(lambda: all(latest_by_topic(collector)[t]["quality"] == "good"
                                         for t in topics), 30, "every tag good")
            mine = f'"gateway" = \'{config["gateway"]["id"]}\''
            await eventually(lambda: all(influxdb_v1.query(
                f'SELECT count(*) FROM "{d["name"]}" WHERE {mine}') for d in config["devices"]),
                30, "every device's readings in InfluxDB")
        finally:
            stop_gateway(proc, tmp_path)
        latest = latest_by_topic(collector)
        for topic, (device, tag) in topics.items():
            payload = latest[topic]
            assert payload["quality"] == "good", (topic, payload)
            assert payload["ts"].endswith("Z")
            if tag.get("unit"):
                assert payload["unit"] == tag["unit"]
            if tag["name"] != "poll_sequence":
                expected = simulator.value_of(device["connection"]["unit_id"], tag["name"])
                assert same(payload["value"], expected), (topic, payload["value"], expected)
        for device in config["devices"]:
            # The shared database also holds other tests' gateways: look at this one only.
            mine = f'"gateway" = \'{config["gateway"]["id"]}\''
            [tagged] = influxdb_v1.query(f'SELECT * FROM "{device["name"]}" WHERE {mine} LIMIT 1')
            assert tagged["site"] == config["gateway"]["site"]
            assert (tagged["area"], tagged["line"]) == (device["area"], device["line"])
            [last] = influxdb_v1.query(f'SELECT last(*) FROM "{device["name"]}" WHERE {mine}')
            for tag in device["tags"]:
                if tag["name"] == "poll_sequence":
                    continue
                expected = simulator.value_of(device["connection"]["unit_id"], tag["name"])
                actual = last[f"last_{tag['name']}"]
                assert same(actual, expected), (device["name"], tag["name"], actual, expected)


async def test_gateway_run_writes_through_the_v2_api_to_victoria_metrics(
        tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetricsServer) -> None:
    influx = {"url": victoria_metrics.url, "api": "v2", "token": "any", "org": "factory",
              "bucket": "telemetry", "flush_interval": "200ms"}
    simulator = ModbusSimulator(port=0, seed=6)
    async with simulator:
        await asyncio.sleep(0.3)
        simulator.freeze(True)
        config_path = demo_config_for(tmp_path, simulator.port, mosquitto.url, influx)
        proc = start_gateway(config_path, tmp_path)
        try:
            series = await asyncio.to_thread(
                victoria_metrics.wait_for_series, '{__name__=~"packer-03_.*"}', 8, 30.0)
        finally:
            stop_gateway(proc, tmp_path)
    values = {s["metric"]["__name__"]: s["values"][-1] for s in series}
    assert same(float(values["packer-03_speed"]), simulator.value_of(3, "speed"))
    assert same(float(values["packer-03_energy_meter"]), simulator.value_of(3, "energy_meter"))
    assert values["packer-03_good_count"] == simulator.value_of(3, "good_count")
