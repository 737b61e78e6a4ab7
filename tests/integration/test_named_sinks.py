"""Named sinks: two MQTT brokers side by side (the plant's own and a UNS broker), each sink
with its own cursor, so that one broker's outage holds back only that sink."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.modbus import ModbusSimulator
from tests.fixtures_mqtt import Mosquitto, MqttCollector

pytestmark = pytest.mark.integration


def config_text(tmp_path: Path, port: int, local: str, cloud: str) -> str:
    return textwrap.dedent(f"""\
        gateway:
          id: edge-named
          site: plant
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{enabled: false}}
        sinks:
          mqtt: {{url: "{local}"}}
          cloud:
            type: mqtt
            url: "{cloud}"
            topic: "uns/{{site}}/{{device}}/{{tag}}"
        devices:
          - name: press-01
            driver: modbus
            poll_interval: 100ms
            connection: {{host: 127.0.0.1, port: {port}, unit_id: 1}}
            tags:
              - {{name: poll_sequence, table: input, address: 20, type: uint32}}
        """)


async def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def sequences(collector: MqttCollector, topic: str) -> list[int]:
    return [int(json.loads(m.payload)["value"]) if isinstance(m.payload, (str, bytes))
            else int(m.payload["value"]) for m in collector.on(topic)]


async def test_two_brokers_each_get_everything_and_an_outage_holds_back_only_its_sink(
        tmp_path: Path, modbus_simulator: ModbusSimulator, mosquitto: Mosquitto,
        fresh_mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    modbus_simulator.freeze(False)
    local = mqtt_collector(mosquitto.host, mosquitto.port, "plant/press-01/#")
    cloud = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port, "uns/#",
                           persistent=True)
    local.wait_subscribed()
    cloud.wait_subscribed()
    config = parse_config(config_text(tmp_path, modbus_simulator.port, mosquitto.url,
                                      fresh_mosquitto.url), env={})
    assert list(config.sinks) == ["mqtt", "cloud"]
    gateway = Gateway(config)
    assert [s.name for s in gateway.state.sinks] == ["mqtt", "cloud"]
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    try:
        local_topic = "plant/press-01/poll_sequence"
        cloud_topic = "uns/plant/press-01/poll_sequence"
        await eventually(lambda: len(local.on(local_topic)) >= 5
                         and len(cloud.on(cloud_topic)) >= 5, 30, "both brokers")
        fresh_mosquitto.stop()
        buffer = gateway.state.buffer
        assert buffer is not None
        await eventually(lambda: buffer.depth("cloud") >= 10, 30, "a backlog for cloud")
        assert buffer.depth("mqtt") < buffer.depth("cloud")  # the local sink keeps going
        fresh_mosquitto.start()
        await eventually(lambda: buffer.depth("cloud") <= 2, 60, "cloud to catch up")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
    got_cloud = sorted(set(sequences(cloud, cloud_topic)))
    assert got_cloud[-1] - got_cloud[0] + 1 == len(got_cloud), "the outage lost readings"


def test_a_sink_of_an_unknown_type_names_the_installed_ones(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    text = config_text(tmp_path, 502, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2")
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("type: mqtt", "type: kafka"), env={})
    (problem,) = caught.value.problems
    assert problem.path == "sinks.cloud.type"
    assert "unknown sink type 'kafka'" in problem.message and "sparkplug" in problem.message
