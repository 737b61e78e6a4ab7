"""Commands arriving while the device is polled every 50ms: each is written, verified and
answered, and polling goes on undisturbed (poll_sequence keeps counting up, every reading
good)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from drivers.modbus.codec import encode_value
from gateway.config import parse_config
from gateway.runtime import Gateway
from gateway.sinks.mqtt import MqttSink
from simulators.modbus import ModbusSimulator
from tests.fixtures_mqtt import Mosquitto
from tests.integration.test_commands import Commander, config_text, eventually

pytestmark = pytest.mark.integration
SEQUENCE_TAG = ("      - {name: poll_sequence, table: input, address: 20, "
                "type: uint32}\n")


async def test_commands_during_fast_polling_are_verified_and_polls_continue(
        tmp_path: Path, modbus_simulator: ModbusSimulator, mosquitto: Mosquitto) -> None:
    site = f"fast-{uuid.uuid4().hex[:6]}"
    text = config_text(tmp_path, site, modbus_simulator.port, mosquitto.url, "5").replace(
        "poll_interval: 200ms", "poll_interval: 50ms") + SEQUENCE_TAG
    gateway = Gateway(parse_config(text, env={}))
    [sink] = gateway.state.sinks
    assert isinstance(sink, MqttSink)
    commander = Commander(mosquitto.host, mosquitto.port)
    commander.start(f"{site}/#")
    prefix = f"{site}/stamping/line-1/press-01"
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    try:
        await eventually(lambda: sink.accepting_commands, 30, "the command subscription")
        await eventually(lambda: len(commander.on(prefix + "/poll_sequence")) >= 5, 30,
                         "polls")
        for n in range(20):
            payload = json.dumps({"value": 100 + n, "id": f"c{n}"})
            await asyncio.to_thread(commander.send, prefix + "/setpoint/set", payload)
        await eventually(lambda: len(commander.on(prefix + "/setpoint/set/result")) == 20, 60,
                         "20 results")
        polls_at_last_result = len(commander.on(prefix + "/poll_sequence"))
        await eventually(lambda: len(commander.on(prefix + "/poll_sequence"))
                         >= polls_at_last_result + 5, 30, "polls after the commands")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        commander.close()
    results = [a.payload for a in commander.on(prefix + "/setpoint/set/result")]
    assert [r["id"] for r in results] == [f"c{n}" for n in range(20)]
    assert all(r["ok"] is True for r in results), results
    assert [r["value"] for r in results] == [100 + n for n in range(20)]
    assert modbus_simulator.read_registers(1, "holding", 100, 2) == encode_value(119.0,
                                                                                 "float32")
    sequence = [a.payload for a in commander.on(prefix + "/poll_sequence")]
    assert all(p["quality"] == "good" for p in sequence), [p for p in sequence
                                                          if p["quality"] != "good"][:3]
    values = [p["value"] for p in sequence]
    assert values == sorted(values) and len(set(values)) == len(values), values
