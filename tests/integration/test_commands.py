"""Commands end to end on real parts: a client publishes to mosquitto, a real Gateway (in
process, http off) writes to the Modbus simulator over TCP, reads back and answers on
`/set/result` (and on an MQTT 5 response topic with its correlation data)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.modbus.codec import encode_value
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.metrics import COUNTERS
from gateway.runtime import Gateway
from gateway.sinks.mqtt import MqttSink
from gateway.sinks.sparkplug.sparkplug_b_pb2 import Payload
from simulators.modbus import ModbusSimulator
from tests.fixtures_mqtt import Mosquitto
from tests.sparkplug_host import SparkplugHost

pytestmark = pytest.mark.integration
PROTOCOLS = ["3.1.1", "5"]
SITES = itertools.count()


def config_text(tmp_path: Path, site: str, modbus_port: int, broker: str,
                protocol: str) -> str:
    return textwrap.dedent(f"""\
        gateway:
          id: edge-cmd
          site: {site}
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{enabled: false}}
        sinks:
          mqtt: {{url: "{broker}", commands: true, protocol: "{protocol}"}}
        devices:
          - name: press-01
            driver: modbus
            area: stamping
            line: line-1
            poll_interval: 200ms
            connection: {{host: 127.0.0.1, port: {modbus_port}, unit_id: 1, timeout: 1s}}
            reconnect_max_backoff: 1s
            tags:
              - {{name: setpoint, table: holding, address: 100, type: float32, writable: true,
                  min: 0, max: 500, min_write_interval: 0s}}
              - {{name: door_open, table: holding, address: 0, type: bool, bit: 3,
                  writable: true, min_write_interval: 1h}}
              - {{name: oil_temperature, table: holding, address: 10, type: float32}}
        """)


@dataclass
class Answer:
    topic: str
    payload: Any
    retain: bool
    correlation: bytes | None


@dataclass
class Commander:
    """An MQTT 5 client (it also talks to a 3.1.1 sink: the broker translates) that publishes
    commands and records every answer under its topic filter."""

    host: str
    port: int
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"commander-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._ready.set()

    def start(self, topic_filter: str) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, 1)
        assert self._ready.wait(10), "commander could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        correlation = getattr(msg.properties, "CorrelationData", None)
        with self._lock:
            self.answers.append(Answer(msg.topic, payload, bool(msg.retain), correlation))

    def send(self, topic: str, payload: bytes | str, retain: bool = False,
             response_topic: str | None = None, correlation: bytes | None = None) -> None:
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        info.wait_for_publish(10)

    def on(self, topic: str) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Running:
    gateway: Gateway
    sink: MqttSink
    commander: Commander
    simulator: ModbusSimulator
    prefix: str

    def topic(self, tag: str) -> str:
        return f"{self.prefix}/{tag}/set"

    async def command(self, tag: str, payload: bytes | str, **options: Any) -> Answer:
        """Publish one command and wait for its one result."""
        topic = self.topic(tag)
        before = len(self.commander.on(topic + "/result"))
        await asyncio.to_thread(self.commander.send, topic, payload, **options)
        await eventually(lambda: len(self.commander.on(topic + "/result")) > before, 20,
                         f"the result on {topic}/result")
        return self.commander.on(topic + "/result")[-1]


async def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def writes(tag: str, result: str) -> float:
    return COUNTERS.get("gateway_writes_total", device="press-01", tag=tag, result=result)


@contextlib.asynccontextmanager
async def start_gateway(tmp_path: Path, simulator: ModbusSimulator, broker: Mosquitto,
                        protocol: str, before_start: Callable[[Commander, str], None]
                        | None = None) -> AsyncIterator[Running]:
    site = f"cmd{next(SITES)}-{uuid.uuid4().hex[:6]}"
    prefix = f"{site}/stamping/line-1/press-01"
    commander = Commander(broker.host, broker.port)
    commander.start(f"{site}/#")
    if before_start is not None:
        before_start(commander, prefix)
    config = parse_config(config_text(tmp_path, site, simulator.port, broker.url, protocol),
                          env={})
    gateway = Gateway(config)
    [sink] = gateway.state.sinks
    assert isinstance(sink, MqttSink)
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    try:
        await eventually(lambda: sink.accepting_commands, 30, "the command subscription")
        await eventually(lambda: gateway.devices is not None
                         and gateway.devices.is_up("press-01"), 30, "press-01 to answer")
        yield Running(gateway, sink, commander, simulator, prefix)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        commander.close()


@pytest.fixture(params=PROTOCOLS)
async def running(request: pytest.FixtureRequest, tmp_path: Path,
                  modbus_simulator: ModbusSimulator,
                  mosquitto: Mosquitto) -> AsyncIterator[Running]:
    async with start_gateway(tmp_path, modbus_simulator, mosquitto, request.param) as running:
        yield running


def holding(simulator: ModbusSimulator) -> list[Any]:
    return simulator.read_registers(1, "holding", 0, 256)


async def test_a_setpoint_is_written_read_back_and_answered(running: Running) -> None:
    ok_before = writes("setpoint", "ok")
    answer = await running.command("setpoint", json.dumps({"value": 123.25, "id": "sp-1"}))
    assert answer.payload["ok"] is True and answer.payload["id"] == "sp-1"
    assert answer.payload["value"] == 123.25 and answer.payload["ts"].endswith("Z")
    assert answer.retain is False
    assert running.simulator.read_registers(1, "holding", 100, 2) == encode_value(
        123.25, "float32")
    assert writes("setpoint", "ok") == ok_before + 1


async def test_a_bit_of_the_status_word_leaves_the_other_bits(running: Running) -> None:
    [status] = running.simulator.read_registers(1, "holding", 0, 1)
    assert status & 1 and not status & 8  # running, door closed (the model frozen at t=0)
    answer = await running.command("door_open", "true")  # a bare JSON value
    assert answer.payload == {**answer.payload, "ok": True, "value": True, "id": None}
    assert running.simulator.read_registers(1, "holding", 0, 1) == [status | 8]


REFUSALS = [
    ("nope", '{"value": 1, "id": "r-unknown"}', "has no tag 'nope'"),
    ("oil_temperature", '{"value": 20, "id": "r-readonly"}', "not writable"),
    ("setpoint", '{"value": "abc", "id": "r-type"}', "takes a number"),
    ("setpoint", '{"value": 900, "id": "r-max"}', "above the tag's max 500"),
    ("setpoint", '{"value": -1, "id": "r-min"}', "below the tag's min 0"),
    ("door_open", "{not json", "not JSON"),
    ("door_open", '{"id": "r-novalue"}', "no value"),
]


async def test_every_refusal_gets_exactly_one_result_and_writes_nothing(
        running: Running) -> None:
    before = holding(running.simulator)
    refused_before = writes("setpoint", "refused")
    for tag, payload, _ in REFUSALS:
        await asyncio.to_thread(running.commander.send, running.topic(tag), payload)
    # Commands are answered in order: once the last one's result is in, all are.
    await asyncio.to_thread(running.commander.send, running.topic("setpoint"),
                            '{"value": 5, "id": "last"}')
    results = running.topic("setpoint") + "/result"
    await eventually(lambda: any(a.payload.get("id") == "last"
                                 for a in running.commander.on(results)), 20, "the last one")
    seen: dict[str, int] = {}
    for tag, payload, reason in REFUSALS:
        answers = running.commander.on(running.topic(tag) + "/result")
        index = seen.get(tag, 0)
        seen[tag] = index + 1
        answer = answers[index].payload
        assert answer["ok"] is False and reason in answer["error"], (payload, answer)
        assert not answers[index].retain
    for tag, count in seen.items():
        expected = count + (1 if tag == "setpoint" else 0)  # the final "last" command
        assert len(running.commander.on(running.topic(tag) + "/result")) == expected, tag
    after = holding(running.simulator)
    assert after[:100] == before[:100] and after[102:] == before[102:]  # only "last" wrote
    assert writes("setpoint", "refused") == refused_before + 3
    assert writes("nope", "refused") >= 1


async def test_a_device_that_is_down_refuses_at_once_and_nothing_is_buffered(
        running: Running) -> None:
    await running.simulator.stop()
    gateway = running.gateway
    assert gateway.devices is not None
    await eventually(lambda: not gateway.devices.is_up("press-01"), 30, "press-01 down")
    started = time.monotonic()
    answer = await running.command("setpoint", '{"value": 42, "id": "down"}')
    assert answer.payload == {"id": "down", "ok": False,
                              "error": "press-01 is down: nothing was written"}
    assert time.monotonic() - started < 10
    await running.simulator.start()  # the PLC is back: the refused command stays refused
    await eventually(lambda: gateway.devices.is_up("press-01"), 30, "press-01 back")
    await running.command("door_open", "false")
    assert running.simulator.read_registers(1, "holding", 100, 2) == [0, 0]
    assert len(running.commander.on(running.topic("setpoint") + "/result")) == 1


async def test_commands_for_one_device_run_in_order(running: Running) -> None:
    for n in range(1, 21):
        await asyncio.to_thread(running.commander.send, running.topic("setpoint"),
                                json.dumps({"value": n, "id": f"n{n}"}))
    topic = running.topic("setpoint") + "/result"
    await eventually(lambda: len(running.commander.on(topic)) >= 20, 30, "20 results")
    answers = [a.payload for a in running.commander.on(topic)]
    assert [a["id"] for a in answers] == [f"n{n}" for n in range(1, 21)]
    assert all(a["ok"] for a in answers) and answers[-1]["value"] == 20
    assert running.simulator.read_registers(1, "holding", 100, 2) == encode_value(20.0,
                                                                                 "float32")


async def test_a_second_write_sooner_than_min_write_interval_is_refused(
        running: Running) -> None:
    first = await running.command("door_open", '{"value": true, "id": "w1"}')
    assert first.payload["ok"] is True
    [status] = running.simulator.read_registers(1, "holding", 0, 1)
    second = await running.command("door_open", '{"value": false, "id": "w2"}')
    assert second.payload["ok"] is False and second.payload["id"] == "w2"
    assert "min_write_interval is 3600000ms: nothing was written" in second.payload["error"]
    assert running.simulator.read_registers(1, "holding", 0, 1) == [status]  # bit 3 still set
    assert status & 8
    ok = await running.command("setpoint", '{"value": 1, "id": "other-tag"}')
    assert ok.payload["ok"] is True  # the interval is per tag


def test_min_write_interval_defaults_to_100ms(tmp_path: Path) -> None:
    text = config_text(tmp_path, "s", 502, "mqtt://127.0.0.1:1883", "3.1.1").replace(
        ", min_write_interval: 1h", "")
    [device] = parse_config(text, env={}).devices
    intervals = {t.name: t.min_write_interval for t in device.declared_tags()}
    assert intervals == {"setpoint": 0.0, "door_open": 0.1, "oil_temperature": 0.1}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_retained_command_is_ignored_not_written_on_connect(
        tmp_path: Path, modbus_simulator: ModbusSimulator, mosquitto: Mosquitto,
        protocol: str) -> None:
    def leave_a_stale_retained_command(commander: Commander, prefix: str) -> None:
        commander.send(f"{prefix}/setpoint/set", '{"value": 77, "id": "stale"}', retain=True)

    async with start_gateway(tmp_path, modbus_simulator, mosquitto, protocol,
                             leave_a_stale_retained_command) as running:
        try:
            answer = await running.command("door_open", '{"value": false, "id": "live"}')
            assert answer.payload["ok"] is True
            assert running.commander.on(running.topic("setpoint") + "/result") == []
            assert modbus_simulator.read_registers(1, "holding", 100, 2) == [0, 0]
        finally:
            await asyncio.to_thread(running.commander.send, running.topic("setpoint"), b"",
                                    retain=True)  # clears the retained message


async def test_mqtt5_response_topic_and_correlation_data_are_honoured(
        tmp_path: Path, modbus_simulator: ModbusSimulator, mosquitto: Mosquitto) -> None:
    async with start_gateway(tmp_path, modbus_simulator, mosquitto, "5") as running:
        reply = running.prefix.split("/")[0] + "/replies/client-7"
        answer = await running.command("setpoint", '{"value": 7.5, "id": "c5"}',
                                       response_topic=reply, correlation=b"\x00corr-42")
        await eventually(lambda: bool(running.commander.on(reply)), 20, "the response topic")
        [direct] = running.commander.on(reply)
        assert direct.payload == answer.payload and direct.payload["value"] == 7.5
        assert direct.correlation == b"\x00corr-42" and answer.correlation == b"\x00corr-42"
        assert not direct.retain


def test_commands_need_a_per_tag_topic(tmp_path: Path) -> None:
    text = config_text(tmp_path, "s", 502, "mqtt://127.0.0.1:1883", "3.1.1").replace(
        "commands: true,", 'commands: true, topic: "{site}/{device}",')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    (problem,) = caught.value.problems
    assert problem.path == "sinks.mqtt.topic" and "{tag}" in problem.message


def dcmd(metrics: list[tuple[str | None, int | None, int, object]]) -> bytes:
    """A DCMD payload: (name, alias, datatype, value) per metric, encoded with the raw schema."""
    payload = Payload(timestamp=time.time_ns() // 1_000_000)
    for name, alias, datatype, value in metrics:
        metric = payload.metrics.add()
        if name is not None:
            metric.name = name
        if alias is not None:
            metric.alias = alias
        metric.datatype = datatype
        if isinstance(value, bool):
            metric.boolean_value = value
        elif isinstance(value, float):
            metric.float_value = value
        else:
            metric.int_value = int(value)  # type: ignore[call-overload]
    return payload.SerializeToString()


async def test_sparkplug_dcmd_by_name_and_alias_writes_and_answers_with_ddata(
        tmp_path: Path, modbus_simulator: ModbusSimulator, mosquitto: Mosquitto) -> None:
    group, edge = f"cmd-{uuid.uuid4().hex[:6]}", "edge-sp"
    text = config_text(tmp_path, "plant", modbus_simulator.port, mosquitto.url, "3.1.1")
    text = text.replace(
        'mqtt: {url: "' + mosquitto.url + '", commands: true, protocol: "3.1.1"}',
        f'scada: {{type: sparkplug, url: "{mosquitto.url}", group_id: {group}, '
        f'edge_node_id: {edge}, commands: true}}')
    gateway = Gateway(parse_config(text, env={}))
    host = SparkplugHost(mosquitto.host, mosquitto.port, group, edge)
    commander = Commander(mosquitto.host, mosquitto.port)
    commander.start(f"spBv1.0/{group}/DCMD/#")
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    refused = COUNTERS.get("gateway_sink_commands_refused_total", sink="scada")
    try:
        await asyncio.to_thread(host.wait, lambda h: bool(h.of_kind("DBIRTH", "press-01")),
                                30, "the DBIRTH")
        born = host.of_kind("DBIRTH", "press-01")[-1].payload
        alias = {m.name: m.alias for m in born.metrics}
        topic = f"spBv1.0/{group}/DCMD/{edge}/press-01"
        await asyncio.to_thread(commander.send, topic, dcmd([
            ("setpoint", None, 9, 42.5),                      # by name
            (None, alias["door_open"], 11, True),             # by alias
            ("oil_temperature", None, 9, 1.0)]))              # read-only: refused
        await asyncio.to_thread(host.wait, lambda h: any(
            p.value == 42.5 for p in h.data_points("press-01", "setpoint")) and any(
            p.value is True for p in h.data_points("press-01", "door_open")), 30,
            "the DDATA of both writes")
        await eventually(lambda: COUNTERS.get("gateway_sink_commands_refused_total",
                                              sink="scada") == refused + 1, 20, "the refusal")
        assert host.violations == []
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        host.close()
        commander.close()
    assert modbus_simulator.read_registers(1, "holding", 100, 2) == encode_value(42.5,
                                                                                "float32")
    assert modbus_simulator.read_registers(1, "holding", 0, 1)[0] & 8
    assert writes("oil_temperature", "refused") >= 1
