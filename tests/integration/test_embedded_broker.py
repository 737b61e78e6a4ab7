"""The embedded amqtt broker of `gateway demo`: the MQTT sink publishes, paho subscribes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.broker import EmbeddedBroker
from gateway.config import MqttSinkConfig
from gateway.metrics import Counters
from gateway.models import Reading
from gateway.sinks import DeviceContext
from gateway.sinks.mqtt import MqttSink
from tests.fixtures_mqtt import Message, MqttCollector

pytestmark = pytest.mark.integration
TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
CONTEXTS = {"press-01": DeviceContext("demo", "plant", "stamping", "line-1", "press-01")}


async def connected_sink(url: str, counters: Counters) -> MqttSink:
    sink = MqttSink(MqttSinkConfig(url=url), "demo", "plant", CONTEXTS, counters)
    await sink.start()
    deadline = time.monotonic() + 10
    while not sink.connected:
        assert time.monotonic() < deadline, "the sink did not connect to the embedded broker"
        await asyncio.sleep(0.02)
    return sink


async def until(collector: MqttCollector, predicate: Callable[[list[Message]], bool],
                seconds: float = 10.0) -> list[Message]:
    # In a thread: the broker lives in this test's event loop and must keep running.
    return await asyncio.to_thread(collector.wait_for, predicate, seconds)


def listening_sockets(port: int | None = None) -> set[tuple[str, int]]:
    """(local address in the kernel's hex, port) of the TCP sockets this process listens on."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and fields[9] in inodes:
                found.add((address, int(hex_port, 16)))
    return {s for s in found if port is None or s[1] == port}


async def test_sink_publishes_to_the_embedded_broker_and_a_paho_subscriber_receives(
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    counters = Counters()
    async with EmbeddedBroker(port=0) as broker:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        collector = await asyncio.to_thread(mqtt_collector, broker.host, broker.port,
                                            "plant/stamping/#")
        sink = await connected_sink(broker.url, counters)
        try:
            await sink.send([Reading(device="press-01", tag="cycle_counter", value=i,
                                     source_ts=TS + timedelta(milliseconds=i), unit="pcs")
                             for i in range(100)])
            messages = await until(collector, lambda m: len(m) >= 100)
        finally:
            await sink.close()
            await asyncio.to_thread(collector.close)
    assert counters.get("gateway_sink_sent_total", sink="mqtt") == 100
    assert {m.topic for m in messages} == {"plant/stamping/line-1/press-01/cycle_counter"}
    assert sorted(m.payload["value"] for m in messages) == list(range(100))
    assert messages[0].payload == {"value": 0, "quality": "good",
                                   "ts": "2026-11-24T01:02:03.123456Z", "unit": "pcs"}


async def test_embedded_broker_keeps_the_retained_online_status(
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    async with EmbeddedBroker(port=0) as broker:
        sink = await connected_sink(broker.url, Counters())
        try:
            late = await asyncio.to_thread(mqtt_collector, broker.host, broker.port,
                                           "plant/_gateway/demo/status")
            [status] = await until(late, lambda m: len(m) >= 1)
        finally:
            await sink.close()
            await asyncio.to_thread(late.close)
    assert status.retain and status.payload["state"] == "online"


async def test_embedded_broker_listens_on_loopback_only_and_warns_nothing() -> None:
    before = listening_sockets()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # amqtt's deprecated config keys would warn
        async with EmbeddedBroker(port=0) as broker:
            opened = listening_sockets() - before
    assert opened == {("0100007F", broker.port)}  # 127.0.0.1 only; no websocket listener


async def test_embedded_broker_frees_its_port_on_exit() -> None:
    async with EmbeddedBroker(port=0) as broker:
        port = broker.port
    assert listening_sockets(port) == set()
    async with EmbeddedBroker(port=port):  # the demo can start again on the same port
        pass


async def test_a_shutdown_that_hangs_still_closes_the_brokers_sockets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt's shutdown waiting forever on a client (seen in an hour-long drill): past the
    timeout the listener and every client connection are closed by force."""
    import gateway.broker

    async def never_returns(self: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(gateway.broker, "SHUTDOWN_TIMEOUT", 1.0)
    counters = Counters()
    broker = await EmbeddedBroker(port=0).__aenter__()
    sink = await connected_sink(broker.url, counters)
    try:
        assert broker._broker is not None
        monkeypatch.setattr(type(broker._broker), "shutdown", never_returns)
        await asyncio.wait_for(broker.__aexit__(None, None, None), 20)
        deadline = time.monotonic() + 20
        while sink.connected:
            assert time.monotonic() < deadline, "the client kept its connection"
            await asyncio.sleep(0.05)
    finally:
        await sink.close()
    with pytest.raises(ConnectionRefusedError):  # the listener is closed, as if killed
        await asyncio.open_connection("127.0.0.1", broker.port)
