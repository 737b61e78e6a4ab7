"""What the gateway says when an OPC UA server stops answering or stops: a reason that names
the timeout (never `"request failed: "`), and no asyncua traceback in the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.opcua import OpcUaSimulator
from tests.fixtures_mqtt import Message, Mosquitto, MqttCollector
from tests.tcp_proxy import SilentableProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOPIC = "plant/cnc/speed"


def config(tmp_path: Path, endpoint: str, mqtt_url: str, mode: str) -> str:
    return f"""
gateway:
  id: edge-test
  site: plant
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 3s
  http: {{enabled: false}}
devices:
  - name: cnc
    driver: opcua
    mode: {mode}
    poll_interval: 200ms
    connection: {{endpoint: "{endpoint}", timeout: 1s}}
    tags:
      - {{name: speed, node: "ns=2;s=Cnc.SpindleSpeed", unit: rpm}}
sinks:
  mqtt:
    url: {mqtt_url}
    topic: "{{site}}/{{device}}/{{tag}}"
"""


def payloads(messages: list[Message], quality: str) -> list[dict[str, Any]]:
    return [m.payload for m in messages
            if m.topic == TOPIC and m.payload.get("quality") == quality]


async def wait_for(collector: MqttCollector, quality: str, what: str) -> list[dict[str, Any]]:
    messages = await asyncio.to_thread(collector.wait_for,
                                       lambda m: bool(payloads(m, quality)), 30, what)
    return payloads(messages, quality)


async def quieted(caplog: pytest.LogCaptureFixture) -> None:
    """Until asyncua's publish loop has reported the lost link (as its ERROR, or as the debug
    line the driver's filter makes of it): the noise this test is about has then been made."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not any("Publish iteration crashed" in r.getMessage() for r in caplog.records):
        assert loop.time() < deadline, "asyncua's publish loop never reported the lost link"
        await asyncio.sleep(0.05)


async def test_a_server_that_stops_answering_is_published_as_timed_out(
        tmp_path: Path, opcua_sim: OpcUaSimulator, mosquitto: Mosquitto,
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    """The link stays open and silent (a hung PLC): the Read times out."""
    async with SilentableProxy(opcua_sim.port) as proxy:
        collector = mqtt_collector(mosquitto.host, mosquitto.port, "plant/#")
        endpoint = f"opc.tcp://127.0.0.1:{proxy.port}/"
        gateway = Gateway(parse_config(config(tmp_path, endpoint, mosquitto.url, "poll")))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            await wait_for(collector, "good", "a good reading")
            proxy.silent = True
            bad = await wait_for(collector, "bad", "the bad reading of the timeout")
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
    assert bad[0]["error"] == "request failed: timed out after 1s (TimeoutError)", bad[0]


async def test_a_server_stop_logs_no_asyncua_traceback(
        tmp_path: Path, mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="drivers.opcua.asyncua")
    sim = OpcUaSimulator(seed=4, tick=0.05)
    await sim.start()
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "plant/#")
    gateway = Gateway(parse_config(config(tmp_path, sim.endpoint, mosquitto.url, "subscribe")))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await wait_for(collector, "good", "a good reading")
        caplog.clear()
        await sim.stop()
        bad = await wait_for(collector, "bad", "the bad reading after the stop")
        await quieted(caplog)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()
    noisy = [r for r in caplog.records
             if r.name.startswith("asyncua.client") and r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    unreachable = [r for r in caplog.records if r.levelno == logging.WARNING
                   and r.getMessage().startswith("cnc: unreachable")]
    assert len(unreachable) == 1 and bad[0]["error"], bad[0]
