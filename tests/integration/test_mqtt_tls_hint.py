"""`mqtt://` aimed at a TLS port: the sink says to use mqtts://, once, never "Unspecified
error"; a plain port that closes after CONNECT is not mistaken for TLS."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from gateway.config import MqttSinkConfig
from gateway.metrics import Counters
from gateway.sinks.mqtt import MqttSink, expects_tls
from tests.fixtures_mqtt import Mosquitto, TlsBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def sink_for(url: str) -> MqttSink:
    return MqttSink(MqttSinkConfig(url=url), "edge-01", "plant", {}, Counters())


async def logged(caplog: pytest.LogCaptureFixture, text: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while text not in caplog.text:
        assert time.monotonic() < deadline, f"not logged: {text!r}; log: {caplog.text}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def closing_port() -> AsyncIterator[int]:
    """A plain TCP port that reads what it gets and closes: no TLS, no MQTT."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_mqtt_url_at_a_tls_port_says_use_mqtts(
        mosquitto_tls: TlsBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.sinks.mqtt")
    port = mosquitto_tls.broker.port
    sink = sink_for(f"mqtt://127.0.0.1:{port}")
    await sink.start()
    try:
        hint = f"the broker at 127.0.0.1:{port} seems to expect TLS: use mqtts://"
        await logged(caplog, hint)
        await logged(caplog, "(attempt 2)")  # a retry, at debug, with the same reason
        assert not sink.connected
    finally:
        await sink.close()
    first = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in first] == [f"mqtt: {hint} (retrying every 1-30 s)"]
    assert "Unspecified error" not in caplog.text


async def test_a_plain_port_that_closes_is_not_called_tls(
        closing_port: int, caplog: pytest.LogCaptureFixture) -> None:
    sink = sink_for(f"mqtt://127.0.0.1:{closing_port}")
    await sink.start()
    try:
        await logged(caplog, "closed the connection before answering CONNECT")
    finally:
        await sink.close()
    assert "TLS" not in caplog.text


async def test_the_probe_tells_a_tls_listener_from_an_mqtt_one(
        mosquitto: Mosquitto, mosquitto_tls: TlsBroker) -> None:
    assert await asyncio.to_thread(expects_tls, "127.0.0.1", mosquitto_tls.broker.port)
    assert not await asyncio.to_thread(expects_tls, "127.0.0.1", mosquitto.port)
