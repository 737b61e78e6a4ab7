"""The docs/commands.md mosquitto ACL, on a real mosquitto: a client without write rights on
the command topics cannot get a write through; the MES user can; the gateway's user reads
commands and publishes results."""

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

# The same rules as docs/commands.md, with its `plant` as this test's site.
ACL = """\
user gateway
topic write {site}/#
topic read {site}/+/+/+/+/set

user mes
topic write {site}/+/+/+/+/set
topic read {site}/#

user viewer
topic read {site}/#
"""


def commander(broker: Mosquitto, user: str, site: str) -> Commander:
    client = Commander(broker.host, broker.port)
    client.client.username_pw_set(user)
    client.start(f"{site}/#")
    return client


async def test_only_a_user_with_write_rights_gets_a_command_through(
        tmp_path: Path, modbus_simulator: ModbusSimulator) -> None:
    site = f"acl-{uuid.uuid4().hex[:6]}"
    acl = tmp_path / "acl"
    acl.write_text(ACL.format(site=site))
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=f"acl_file {acl}\n")
    broker.start()
    text = config_text(tmp_path, site, modbus_simulator.port, broker.url, "5").replace(
        "commands: true", "commands: true, username: gateway")
    gateway = Gateway(parse_config(text, env={}))
    [sink] = gateway.state.sinks
    assert isinstance(sink, MqttSink)
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    viewer = commander(broker, "viewer", site)
    mes = commander(broker, "mes", site)
    topic = f"{site}/stamping/line-1/press-01/setpoint/set"
    try:
        await eventually(lambda: sink.accepting_commands, 30, "the command subscription")
        await eventually(lambda: gateway.devices is not None
                         and gateway.devices.is_up("press-01"), 30, "press-01 to answer")
        await asyncio.to_thread(viewer.send, topic, json.dumps({"value": 111, "id": "viewer"}))
        await asyncio.to_thread(mes.send, topic, json.dumps({"value": 222, "id": "mes"}))
        await eventually(lambda: bool(mes.on(topic + "/result")), 30, "the MES's result")
        # Commands run in order: had the viewer's got through, its answer would be first.
        assert [a.payload["id"] for a in mes.on(topic + "/result")] == ["mes"]
        assert mes.on(topic + "/result")[0].payload["ok"] is True
        assert modbus_simulator.read_registers(1, "holding", 100, 2) == encode_value(
            222.0, "float32")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        viewer.close()
        mes.close()
        broker.stop()
