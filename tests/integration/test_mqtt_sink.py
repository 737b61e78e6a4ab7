"""The MQTT sink against a real mosquitto: wire format, acknowledgements, outages, status."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.buffer import DurableBuffer
from gateway.config import MqttSinkConfig
from gateway.delivery import SinkDelivery
from gateway.errors import SinkError
from gateway.metrics import Counters
from gateway.models import Quality, Reading
from gateway.sinks import DeviceContext
from gateway.sinks.mqtt import MqttSink
from tests.fixtures_mqtt import Message, Mosquitto, MqttCollector, TlsBroker
from tests.procs import eventually
from tests.tcp_proxy import SilentableProxy

pytestmark = pytest.mark.integration
PROTOCOLS = ["3.1.1", "5"]
TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
CONTEXTS = {"press-01": DeviceContext("edge-01", "jeonju", "stamping", "line-1", "press-01")}


_protocol = "3.1.1"


@pytest.fixture(autouse=True, params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this file runs on MQTT 3.1.1 and on MQTT 5 (mosquitto speaks both)."""
    global _protocol
    _protocol = request.param
    yield request.param
    _protocol = "3.1.1"


def make_sink(url: str, counters: Counters | None = None, **settings: Any) -> MqttSink:
    config = MqttSinkConfig(url=url, protocol=_protocol, **settings)  # type: ignore[arg-type]
    return MqttSink(config, "edge-01", "jeonju", CONTEXTS, counters or Counters())


def counter_readings(count: int, start: int = 0) -> list[Reading]:
    return [Reading(device="press-01", tag="cycle_counter", value=start + i,
                    source_ts=TS + timedelta(milliseconds=i)) for i in range(count)]


async def connected(sink: MqttSink, timeout: float = 10.0) -> MqttSink:
    await sink.start()
    deadline = time.monotonic() + timeout
    while not sink.connected:
        if time.monotonic() > deadline:
            raise AssertionError("sink did not connect")
        await asyncio.sleep(0.02)
    return sink


async def until(collector: MqttCollector, predicate: Callable[[list[Message]], bool],
                seconds: float = 10.0) -> list[Message]:
    return await asyncio.to_thread(collector.wait_for, predicate, seconds)


async def test_payload_and_topic_follow_the_wire_contract(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/stamping/#")
    sink = await connected(make_sink(mosquitto.url))
    try:
        await sink.send([
            Reading(device="press-01", tag="oil_temperature", value=21.5, source_ts=TS,
                    unit="degC"),
            Reading(device="press-01", tag="door_open", value=None, quality=Quality.BAD,
                    source_ts=TS, error="modbus exception 2 (illegal data address)"),
        ])
        messages = await until(collector, lambda m: len(m) >= 2)
    finally:
        await sink.close()
    by_topic = {m.topic: m for m in messages}
    temperature = by_topic["jeonju/stamping/line-1/press-01/oil_temperature"]
    assert temperature.payload == {"value": 21.5, "quality": "good",
                                   "ts": "2026-11-24T01:02:03.123456Z", "unit": "degC"}
    door = by_topic["jeonju/stamping/line-1/press-01/door_open"]
    assert door.payload == {"value": None, "quality": "bad",
                            "ts": "2026-11-24T01:02:03.123456Z",
                            "error": "modbus exception 2 (illegal data address)"}


async def test_qos1_send_returns_after_every_puback_and_all_arrive(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/+/+/press-01/cycle_counter")
    counters = Counters()
    sink = await connected(make_sink(mosquitto.url, counters, retain=False))
    try:
        await sink.send(counter_readings(1000))
        assert counters.get("gateway_sink_sent_total", sink="mqtt") == 1000
        messages = await until(collector, lambda m: len(m) >= 1000)
    finally:
        await sink.close()
    assert sorted(m.payload["value"] for m in messages) == list(range(1000))
    assert not any(m.retain for m in messages)


async def test_qos0_and_retain(mosquitto: Mosquitto,
                               mqtt_collector: Callable[..., MqttCollector]) -> None:
    sink = await connected(make_sink(mosquitto.url, qos=0, retain=True,
                                     topic="qos0/{device}/{tag}"))
    try:
        await sink.send(counter_readings(5))
    finally:
        await sink.close()
    # A subscriber arriving later still gets the last value, retained.
    late = mqtt_collector(mosquitto.host, mosquitto.port, "qos0/#")
    [message] = await until(late, lambda m: len(m) >= 1)
    assert message.retain and message.payload["value"] == 4


async def test_small_paho_queue_still_delivers_everything(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "capped/#")
    sink = await connected(make_sink(mosquitto.url, max_queued_messages=10, retain=False,
                                     topic="capped/{device}/{tag}"))
    try:
        await sink.send(counter_readings(1000))
        messages = await until(collector, lambda m: len(m) >= 1000)
    finally:
        await sink.close()
    assert sorted(m.payload["value"] for m in messages) == list(range(1000))


async def test_status_is_online_on_connect_and_offline_on_clean_close(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/_gateway/#")
    sink = await connected(make_sink(mosquitto.url))
    await until(collector, lambda m: any(x.payload["state"] == "online" for x in m))
    await sink.close()
    messages = await until(collector, lambda m: m[-1].payload["state"] == "offline")
    online = next(m for m in messages if m.payload["state"] == "online")
    assert online.topic == "jeonju/_gateway/edge-01/status" and online.retain is False
    online = online.payload
    assert online["gateway"] == "edge-01" and online["since"].endswith("Z")
    assert set(online) == {"state", "gateway", "since", "version"}
    late = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/_gateway/edge-01/status")
    [retained] = await until(late, lambda m: len(m) >= 1)
    assert retained.retain and retained.payload == {"state": "offline", "gateway": "edge-01"}


async def test_a_late_subscriber_gets_the_retained_online_status(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    sink = await connected(make_sink(mosquitto.url, client_id="late-status"))
    try:
        late = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/_gateway/edge-01/status")
        [message] = await until(late, lambda m: len(m) >= 1)
    finally:
        await sink.close()
    assert message.retain and message.payload["state"] == "online"


def test_last_will_marks_a_killed_gateway_offline(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector],
        tmp_path: Path, protocol: str) -> None:
    script = tmp_path / "publisher.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        from gateway.config import MqttSinkConfig
        from gateway.sinks.mqtt import MqttSink

        async def main():
            sink = MqttSink(MqttSinkConfig(url="{mosquitto.url}", keepalive=1,
                                           protocol="{protocol}", client_id="will-test"),
                            "will-gw", "jeonju", {{}})
            await sink.start()
            await asyncio.sleep(60)

        asyncio.run(main())
    """))
    # The code under test, not whichever checkout the virtualenv has installed.
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, str(script)],
                            env={**os.environ, "PYTHONPATH": root})
    try:
        collector = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/_gateway/will-gw/#")
        collector.wait_for(lambda m: bool(m) and m[-1].payload["state"] == "online", 15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        # The broker publishes the will after 1.5 keepalives without a packet.
        collector.wait_for(lambda m: m[-1].payload["state"] == "offline", 10, "the last will")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_send_fails_fast_when_the_broker_is_down(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = Mosquitto(tmp_path / "never-started")
    counters = Counters()
    sink = make_sink(broker.url, counters)
    await sink.start()
    try:
        started = time.monotonic()
        with pytest.raises(SinkError, match="not connected"):
            await sink.send(counter_readings(3))
        assert time.monotonic() - started < 5  # not the 10 s acknowledgement deadline
        await asyncio.sleep(2.5)  # two or three connection attempts
    finally:
        await sink.close()
    assert counters.get("gateway_sink_failures_total", sink="mqtt") == 1
    # The reason is logged, once per outage rather than once per attempt.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"mqtt: cannot connect to {broker.url}: [Errno 111] Connection "
                        "refused (retrying every 1-30 s)"]


async def test_a_batch_polled_before_the_connack_waits_for_it_without_a_warning(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """On a normal start the first readings can be in the buffer before the broker's CONNACK
    is back: the delivery waits for that first answer instead of failing the batch with a
    warning (seen in the demo on a busy machine)."""
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "jeonju/stamping/#")
    counters = Counters()
    polling_done = asyncio.Event()
    polling_done.set()  # a failed batch would end the delivery at once, unsent
    buffer = DurableBuffer(tmp_path / "buffer.db", ["mqtt"])
    buffer.append(counter_readings(5))
    async with SilentableProxy(mosquitto.port) as proxy:
        proxy.hold_replies()
        sink = make_sink(f"mqtt://127.0.0.1:{proxy.port}", counters)
        await sink.start()
        try:
            delivery = asyncio.create_task(
                SinkDelivery(sink, buffer, lambda: 5, polling_done).run())
            await eventually(lambda: proxy.forwarded_to_server > 0, 15, "the CONNECT")
            assert not delivery.done()
            proxy.release_replies()
            await asyncio.wait_for(delivery, 30)
            await until(collector, lambda messages: len(messages) >= 5)
        finally:
            await sink.close()
            buffer.close()
    assert counters.get("gateway_sink_failures_total", sink="mqtt") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_wait_for_the_first_connection_ends_when_the_broker_refuses(
        tmp_path: Path) -> None:
    sink = make_sink(Mosquitto(tmp_path / "never-started").url)
    await sink.start()
    try:
        await asyncio.wait_for(sink.wait_first_connection(600), 20)
    finally:
        await sink.close()
    assert not sink.connected


async def test_send_returns_only_after_the_pubacks_and_fails_when_none_come(
        fresh_mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    counters = Counters()
    sink = await connected(make_sink(fresh_mosquitto.url, counters, retain=False))
    sink.ack_timeout = 1.0
    try:
        fresh_mosquitto.pause()  # connected, but no PUBACK will come
        started = time.monotonic()
        with pytest.raises(SinkError, match="no acknowledgement"):
            await sink.send(counter_readings(10))
        assert 1.0 <= time.monotonic() - started < 6  # the 1 s deadline, not the default 10 s
        assert counters.get("gateway_sink_sent_total", sink="mqtt") == 0
        fresh_mosquitto.resume()
        collector = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port,
                                   "jeonju/+/+/press-01/#")
        await sink.send(counter_readings(10, start=100))
        messages = await until(collector, lambda m: {x.payload["value"] for x in m}
                               >= set(range(100, 110)))
    finally:
        fresh_mosquitto.resume()
        await sink.close()
    assert counters.get("gateway_sink_sent_total", sink="mqtt") == 10
    # paho re-sent the failed batch's messages too: duplicates are allowed, loss is not.
    assert {m.payload["value"] for m in messages} >= set(range(100, 110))


async def test_a_connection_lost_mid_batch_fails_the_batch_at_once(
        fresh_mosquitto: Mosquitto) -> None:
    sink = await connected(make_sink(fresh_mosquitto.url))
    try:
        fresh_mosquitto.pause()
        sending = asyncio.create_task(sink.send(counter_readings(100)))
        await asyncio.sleep(0.3)
        assert not sending.done()
        started = time.monotonic()
        fresh_mosquitto.kill()
        with pytest.raises(SinkError, match="lost"):
            await asyncio.wait_for(sending, 5)
        assert time.monotonic() - started < 6  # not the 10 s acknowledgement deadline
        assert not sink.connected
    finally:
        await sink.close()


async def test_names_the_broker_would_refuse_are_sanitized_not_fatal(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    # mosquitto drops a client that publishes to a topic with a control character; paho then
    # re-sends it on every reconnect, so an unsanitized name would stall the sink for good.
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "sanitized/#")
    sink = await connected(make_sink(mosquitto.url, retain=False,
                                     topic="sanitized/{device}/{tag}"))
    try:
        await sink.send([Reading(device="press\x01", tag="temp\x7f\x85/#", value=1,
                                 source_ts=TS)])
        await sink.send(counter_readings(1))
        messages = await until(collector, lambda m: len(m) >= 2)
        assert sink.connected
    finally:
        await sink.close()
    assert {m.topic for m in messages} == {"sanitized/press_/temp____",
                                           "sanitized/press-01/cycle_counter"}


async def test_sink_reconnects_after_the_broker_is_killed_and_restarted(
        fresh_mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    sink = await connected(make_sink(fresh_mosquitto.url))
    try:
        await sink.send(counter_readings(10))
        fresh_mosquitto.kill()
        with pytest.raises(SinkError):
            for _ in range(50):
                await sink.send(counter_readings(10))
                await asyncio.sleep(0.1)
        fresh_mosquitto.start()
        collector = mqtt_collector(fresh_mosquitto.host, fresh_mosquitto.port,
                                   "jeonju/+/+/press-01/cycle_counter")
        deadline = time.monotonic() + 40
        while True:
            try:
                await sink.send(counter_readings(10, start=100))
                break
            except SinkError:
                assert time.monotonic() < deadline, "the sink never reconnected"
                await asyncio.sleep(0.2)
        messages = await until(collector, lambda m: any(x.payload["value"] == 109 for x in m))
        assert {m.payload["value"] for m in messages} >= set(range(100, 110))
    finally:
        await sink.close()


async def test_an_unpublishable_message_is_dropped_and_counted_not_retried_forever(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "toolong/#")
    counters = Counters()
    sink = await connected(make_sink(mosquitto.url, counters, retain=False,
                                     topic="toolong/{device}/{tag}"))
    try:
        # MQTT topics end at 65,535 bytes: paho refuses this one for good.
        too_long = Reading(device="press-01", tag="x" * 70_000, value=1, source_ts=TS)
        await sink.send([too_long, *counter_readings(3)])
        messages = await until(collector, lambda m: len(m) >= 3)
    finally:
        await sink.close()
    assert sorted(m.payload["value"] for m in messages) == [0, 1, 2]
    assert counters.get("gateway_sink_sent_total", sink="mqtt") == 3
    assert counters.get("gateway_sink_dropped_total", sink="mqtt", reason="unpublishable") == 1


async def test_online_status_follows_a_reconnect_even_with_paho_queue_full(
        fresh_mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="gateway.sinks.mqtt")
    broker = fresh_mosquitto
    collector = mqtt_collector(broker.host, broker.port, "jeonju/_gateway/edge-01/status")
    sink = await connected(make_sink(broker.url, max_queued_messages=10))
    sink.ack_timeout = 1.0
    try:
        [first] = await until(collector, lambda m: len(m) >= 1)
        broker.pause()
        with pytest.raises(SinkError, match="queue stays full"):
            await sink.send(counter_readings(100))  # leaves 10 unacknowledged in paho
        broker.kill()
        broker.start()
        await until(collector, lambda m: any(x.payload["state"] == "online"
                                             and x.payload["since"] > first.payload["since"]
                                             for x in m), 30)
    finally:
        await sink.close()
    assert "the online status follows" in caplog.text


async def test_device_payload_mode_sends_one_message_per_device_and_cycle(
        mosquitto: Mosquitto, mqtt_collector: Callable[..., MqttCollector]) -> None:
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "devmode/#")
    sink = await connected(make_sink(mosquitto.url, payload="device", retain=False,
                                     device_topic="devmode/{device}"))
    cycle = [Reading(device="press-01", tag=f"t{i}", value=i, source_ts=TS) for i in range(50)]
    try:
        await sink.send(cycle + cycle)  # two poll cycles of 50 tags
        messages = await until(collector, lambda m: len(m) >= 2)
    finally:
        await sink.close()
    assert [m.topic for m in messages] == ["devmode/press-01", "devmode/press-01"]
    assert messages[0].payload["values"] == {f"t{i}": i for i in range(50)}


async def test_mqtts_with_client_certificate_and_password_delivers(
        mosquitto_tls: TlsBroker) -> None:
    tls = mosquitto_tls
    counters = Counters()
    sink = await connected(make_sink(tls.url, counters, ca=str(tls.ca),
                                     cert=str(tls.client_cert), key=str(tls.client_key),
                                     username=tls.username, password=tls.password))
    try:
        await sink.send(counter_readings(20))
        # thousands of PUBACKs in a burst: many to a TLS record, read ahead past the selector
        await sink.send(counter_readings(5000, start=20))
    finally:
        await sink.close()
    assert counters.get("gateway_sink_sent_total", sink="mqtt") == 5020


async def test_mqtts_wrong_password_is_refused_with_a_clear_log(
        mosquitto_tls: TlsBroker, caplog: pytest.LogCaptureFixture) -> None:
    tls = mosquitto_tls
    sink = make_sink(tls.url, ca=str(tls.ca), cert=str(tls.client_cert),
                     key=str(tls.client_key), username=tls.username, password="wrong")
    await sink.start()
    try:
        deadline = time.monotonic() + 10
        while "refused the connection" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not sink.connected
        with pytest.raises(SinkError, match="not connected"):
            await sink.send(counter_readings(1))
    finally:
        await sink.close()
    assert "refused the connection: Not authorized (reason code 135" in caplog.text
    assert "wrong" not in caplog.text


async def test_credentials_in_the_url_are_used_and_never_logged(
        mosquitto_tls: TlsBroker, caplog: pytest.LogCaptureFixture) -> None:
    tls = mosquitto_tls
    url = tls.url.replace("mqtts://", f"mqtts://{tls.username}:{tls.password}@")
    caplog.set_level("DEBUG")
    sink = await connected(make_sink(url, ca=str(tls.ca), cert=str(tls.client_cert),
                                     key=str(tls.client_key)))
    try:
        await sink.send(counter_readings(1))
    finally:
        await sink.close()
    assert f"connected to {tls.url}" in caplog.text
    assert tls.password not in caplog.text


async def test_an_untrusted_server_certificate_is_logged_with_the_reason(
        mosquitto_tls: TlsBroker, caplog: pytest.LogCaptureFixture) -> None:
    tls = mosquitto_tls
    # The client's own certificate is no CA of the server's: verification must fail loudly.
    sink = make_sink(tls.url, ca=str(tls.client_cert), cert=str(tls.client_cert),
                     key=str(tls.client_key), username=tls.username, password=tls.password)
    await sink.start()
    try:
        deadline = time.monotonic() + 10
        while "cannot connect" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not sink.connected
    finally:
        await sink.close()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def _nodelay(sink: MqttSink) -> int:
    sock = sink.session.client.socket()
    assert sock is not None, "connected, so paho holds a socket"
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def test_the_broker_socket_sends_without_nagle_plain_and_tls(
        mosquitto: Mosquitto, mosquitto_tls: TlsBroker) -> None:
    """TCP_NODELAY on every connection: with Nagle a command's result waited up to 40 ms
    behind its PUBACK (Linux's delayed ACK)."""
    tls = mosquitto_tls
    plain = await connected(make_sink(mosquitto.url))
    secure = await connected(make_sink(tls.url, ca=str(tls.ca), cert=str(tls.client_cert),
                                       key=str(tls.client_key), username=tls.username,
                                       password=tls.password))
    try:
        assert _nodelay(plain) == 1
        assert _nodelay(secure) == 1
    finally:
        await plain.close()
        await secure.close()
