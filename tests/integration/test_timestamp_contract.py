"""The timestamp contract: the SourceTimestamp an OPC UA server gives a value is the `ts` of
its MQTT message and the time of its InfluxDB point, to the microsecond. (An array tag rides
along: a JSON list over MQTT, no InfluxDB field.)

OPC UA DateTime counts 100 ns ticks; asyncua 2.1 decodes them into a Python datetime (µs),
flooring the last digit, so the gateway's resolution is the microsecond end to end."""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from gateway.config import parse_config
from gateway.runtime import Gateway
from gateway.sinks.line_protocol import timestamp_ns
from simulators.opcua import OpcUaSimulator
from tests.fixtures_influx import InfluxV1Server
from tests.fixtures_mqtt import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SOURCE_TS = datetime(2026, 3, 4, 5, 6, 7, 123457, tzinfo=UTC)


def config(tmp_path: Path, device: str, mode: str, sim: OpcUaSimulator, mqtt_url: str,
           influx: InfluxV1Server) -> str:
    return f"""
gateway:
  id: edge-ts
  site: plant
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 3s
  http: {{enabled: false}}
devices:
  - name: {device}
    driver: opcua
    mode: {mode}
    poll_interval: 200ms
    connection: {{endpoint: {sim.endpoint}, timeout: 2s}}
    tags:
      - {{name: temperature, node: "ns=2;s=Types.Double", unit: degC}}
      - {{name: axes, node: "ns=2;s=Types.DoubleArray"}}
sinks:
  mqtt: {{url: {mqtt_url}, qos: 1, retain: false}}
  influxdb: {{url: {influx.url}, api: v1, database: {influx.database}, flush_interval: 200ms}}
"""


async def set_source_timestamp(sim: OpcUaSimulator, value: float, ts: datetime) -> None:
    await sim._nodes["Types.Double"].write_value(ua.DataValue(
        ua.Variant(value, ua.VariantType.Double),
        SourceTimestamp=ts,  # type: ignore[arg-type]  # asyncua types it as ua.DateTime
        ServerTimestamp=datetime.now(UTC)))  # type: ignore[arg-type]


def influx_points(influx: InfluxV1Server, device: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = influx.query(f'SELECT temperature FROM "{device}"')
        if rows:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"no point for {device} in InfluxDB after {timeout}s")


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_the_servers_source_timestamp_is_the_mqtt_ts_and_the_influxdb_time(
        tmp_path: Path, opcua_sim: OpcUaSimulator, mosquitto: Mosquitto,
        influxdb_v1: InfluxV1Server, mqtt_collector: Callable[..., Any], mode: str) -> None:
    device = f"ts-{mode}"
    await set_source_timestamp(opcua_sim, 21.5, SOURCE_TS)
    collector = mqtt_collector(mosquitto.host, mosquitto.port, f"plant/{device}/#")
    gateway = Gateway(parse_config(config(tmp_path, device, mode, opcua_sim, mosquitto.url,
                                          influxdb_v1)))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        messages = await asyncio.to_thread(
            collector.wait_for, lambda m: {x.topic.rsplit("/", 1)[-1] for x in m
                                           if x.payload.get("quality") == "good"}
            >= {"temperature", "axes"}, 15, "good readings of both tags")
        rows = await asyncio.to_thread(influx_points, influxdb_v1, device, 15)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    good = next(m.payload for m in messages if m.topic.endswith("/temperature")
                and m.payload.get("quality") == "good")
    assert good["value"] == 21.5
    axes = next(m.payload for m in messages if m.topic.endswith("/axes"))
    assert axes["value"] == [1.0, 2.0, 3.0]  # an array is a JSON list; InfluxDB skips it
    assert "axes" not in influxdb_v1.query(f'SELECT * FROM "{device}"')[0]
    assert good["ts"] == "2026-03-04T05:06:07.123457Z"
    assert [row["time"] for row in rows] == [timestamp_ns(SOURCE_TS)]
    assert rows[0]["time"] == 1772600767123457000
