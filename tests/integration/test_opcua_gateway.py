"""The whole path with a secured OPC UA device: SignAndEncrypt, a password from the environment
and a pinned server certificate, through the gateway runtime to a real mosquitto; the server
restarts mid-run and readings flow again within 10 s."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.opcua import OpcUaSimulator
from simulators.opcua.security import SimulatorSecurity
from tests.fixtures_mqtt import Message, Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOPIC = "plant/machining/line-2/cnc-07/part_counter"


def config(tmp_path: Path, sim: OpcUaSimulator, mqtt_url: str) -> str:
    assert sim.security is not None
    return f"""
gateway:
  id: edge-test
  site: plant
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 3s
  http: {{enabled: false}}
devices:
  - name: cnc-07
    driver: opcua
    area: machining
    line: line-2
    mode: subscribe
    poll_interval: 200ms
    connection:
      endpoint: {sim.endpoint}
      security: Basic256Sha256
      mode: SignAndEncrypt
      server_certificate: {sim.security.certificate_path}
      pki: {tmp_path / 'pki'}
      username: operator
      password: ${{OPCUA_PASSWORD}}
      timeout: 2s
    tags:
      - {{name: part_counter, node: "ns=2;s=Cnc.PartCounter"}}
      - {{name: spindle_speed, node: "ns=2;s=Cnc.SpindleSpeed", unit: rpm}}
sinks:
  mqtt:
    url: {mqtt_url}
    qos: 1
    retain: false
"""


def good_counts(messages: list[Message]) -> list[int]:
    return [m.payload["value"] for m in messages
            if m.topic == TOPIC and m.payload.get("quality") == "good"]


async def test_secured_device_survives_a_server_restart(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., Any]) -> None:
    security = SimulatorSecurity(pki=tmp_path / "server-pki", users={"operator": "s3cret"})
    async with OpcUaSimulator(seed=3, tick=0.05, security=security) as sim:
        collector = mqtt_collector(mosquitto.host, mosquitto.port, "plant/#")
        text = config(tmp_path, sim, mosquitto.url)
        gateway = Gateway(parse_config(text, env={"OPCUA_PASSWORD": "s3cret"}))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(collector.wait_for, lambda m: len(good_counts(m)) >= 3, 15,
                                    "readings before the restart")
            await sim.restart()
            restarted = loop.time()
            last = max(good_counts(collector.snapshot()))
            await asyncio.to_thread(
                collector.wait_for, lambda m: any(v > last + 2 for v in good_counts(m)), 12,
                "readings after the restart")
            recovered = loop.time() - restarted
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
    assert recovered < 10, f"readings flowed again only after {recovered:.1f}s"
    speeds = [m.payload for m in collector.snapshot() if m.topic.endswith("/spindle_speed")]
    assert speeds and speeds[-1]["unit"] == "rpm"
