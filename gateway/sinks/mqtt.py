"""MQTT sink (paho-mqtt 2.x): one message per reading, acknowledged before the buffer moves on.

paho runs its network loop in its own thread; callbacks are handed to the event loop with
`call_soon_threadsafe`. A batch counts as delivered when every message got its PUBACK (QoS 1) or
was written to the socket (QoS 0). While the broker is unreachable `send()` fails at once, so
the backlog stays in the durable buffer rather than in paho's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway import __version__
from gateway.config import MqttSinkConfig
from gateway.errors import SinkError
from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading, iso_z, utc_now
from gateway.sinks import Delivery, DeviceContext, Sink, SinkEnvironment, SinkSettings
from gateway.sinks.topics import (
    device_cycles,
    encode_device_payload,
    encode_payload,
    render_topic,
    status_topic,
)

log = logging.getLogger(__name__)

YIELD_EVERY = 100
"""Per-tag messages published between two turns of the event loop."""


PROBE_TIMEOUT = 2.0
"""Seconds the TLS probe of a broker that closed the connection may take."""
TLS_RECORDS = (b"\x15", b"\x16")
"""The first byte of a TLS server's answer to a ClientHello: an alert or a handshake record."""


def expects_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether HOST:PORT answers a TLS ClientHello with a TLS record: a TLS listener does, an
    MQTT one closes the connection or answers garbage."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # writes the ClientHello into `outgoing`, then wants the answer
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(outgoing.read())
            first = sock.recv(1)
    except OSError:
        return False
    return first in TLS_RECORDS


class MqttSink(Sink):
    name = "mqtt"
    settings_model = MqttSinkConfig
    ack_timeout = 10.0
    """Seconds a batch may wait for its acknowledgements, plus 1 ms per message."""

    def _enum_of(self, reading: Reading) -> Mapping[int, str] | None:
        context = self.contexts.get(reading.device)
        return context.enums.get(reading.tag) if context is not None and context.enums else None

    @classmethod
    def from_settings(cls, name: str, settings: SinkSettings,
                      environment: SinkEnvironment) -> MqttSink:
        assert isinstance(settings, MqttSinkConfig)
        return cls(settings, environment.gateway_id, environment.site, environment.contexts,
                   name=name)

    def __init__(self, config: MqttSinkConfig, gateway_id: str, site: str,
                 contexts: Mapping[str, DeviceContext], counters: Counters = COUNTERS,
                 name: str | None = None) -> None:
        super().__init__(contexts, name)
        self.config = config
        self.gateway_id = gateway_id
        self.site = site
        self.counters = counters
        self.delivery = Delivery(batch_size=config.batch_size, max_rate=config.max_rate)
        self.status_topic = status_topic(site, gateway_id)
        url = urlsplit(config.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        # Credentials in the URL (mqtt://user:pw@host) never reach a log line.
        self.url = f"{url.scheme}://{self._host}:{self._port}"
        self._url_credentials = (unquote(url.username) if url.username else None,
                                 unquote(url.password) if url.password else None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connect_failures = 0
        self._answered = False  # the broker answered this connection's CONNECT (paho's thread)
        self._early_close: str | None = None  # why a connection closed before the CONNACK
        self._closing = False
        self._pending: set[int] = set()
        self._progress = asyncio.Event()  # an acknowledgement arrived, or the batch failed
        self._failure: str | None = None
        self._topics: dict[tuple[str, str], str] = {}
        self._reconnected = asyncio.Event()
        # PUBACKs arrive on paho's thread; they are queued here and handed to the event loop
        # with at most one wake-up pending, because one call_soon_threadsafe per message can
        # fill the loop's self-pipe, which also carries signals: a full pipe loses a SIGTERM.
        self._acks: deque[int] = deque()
        self._drain_scheduled = False
        self._client = self._new_client()

    # -- lifecycle ---------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=config.client_id or f"shopfloor-{self.gateway_id}",
                             protocol=mqtt.MQTTv311)
        username, password = self._url_credentials
        if config.username:
            username = config.username
            password = config.password.get_secret_value() if config.password else None
        if username:
            client.username_pw_set(username, password)
        if config.url.startswith("mqtts://"):
            client.tls_set(ca_certs=config.ca, certfile=config.cert, keyfile=config.key,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(config.insecure)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        # paho 2.2 silently loses QoS 1 messages past 65,535 queued: cap the queue well below.
        client.max_queued_messages_set(config.max_queued_messages)
        # No in-flight window in paho (0 = unlimited; the queue cap above and the batch bound what
        # is outstanding): with a window, paho 2.2 rescans every outstanding message on each
        # PUBACK (`_update_inflight`), which cut QoS 1 throughput to a third (measured here:
        # 5,900 vs 17,700 msg/s).
        client.max_inflight_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port,
                                   keepalive=max(1, int(self.config.keepalive)))
        self._client.loop_start()  # connects and reconnects by itself, with the delays above

    async def close(self) -> None:
        """Publish the offline status (a clean DISCONNECT discards the last will), then
        disconnect."""
        self._closing = True
        try:
            if self._connected:
                info = self._client.publish(self.status_topic, self._status("offline"), qos=1,
                                            retain=True)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    await asyncio.to_thread(info.wait_for_publish, 2.0)
        except Exception as exc:  # close never raises
            log.debug("mqtt: could not publish the offline status: %s", exc)
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._client.loop_stop)
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def _status(self, state: str) -> bytes:
        status: dict[str, Any] = {"state": state, "gateway": self.gateway_id}
        if state == "online":
            status |= {"since": iso_z(utc_now()),
                       "version": __version__}
        return json.dumps(status).encode()

    # -- delivery ----------------------------------------------------------------------------

    async def send(self, readings: Sequence[Reading]) -> None:
        """Publish the batch; return once every message is acknowledged. One send at a time
        (the delivery loop's contract): the pending set belongs to the batch in flight."""
        if not self._connected:
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise SinkError(f"not connected to the MQTT broker at {self.url}", self.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ack_timeout + len(readings) / 1000
        self._failure = None
        self._pending.clear()
        dropped = 0
        try:
            if self.config.payload == "device":
                for cycle in device_cycles(readings):
                    topic = self._device_topic(cycle[0].device)
                    if not await self._publish(topic, encode_device_payload(cycle), deadline):
                        dropped += len(cycle)
            else:
                dropped = await self._publish_per_tag(readings, deadline)
            await self._wait_for_acks(deadline)
        except SinkError:
            self._pending.clear()
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise
        self.counters.inc("gateway_sink_sent_total", len(readings) - dropped, sink=self.name)

    async def _publish_per_tag(self, readings: Sequence[Reading], deadline: float) -> int:
        """One message per reading; how many were dropped as unpublishable.

        The common case (paho takes the message) stays in this loop without a coroutine per
        message: at QoS 1 paho's own work is about 70 us a message and this sink's share of
        the rest should stay small. Every `YIELD_EVERY` messages the loop lets the event loop
        run (the pollers, and the PUBACKs handed over from paho's thread), since a batch of
        1,000 would otherwise hold it for over 100 ms."""
        publish, qos, retain = self._client.publish, self.config.qos, self.config.retain
        pending, topics = self._pending, self._topics
        dropped = 0
        for n, reading in enumerate(readings, 1):
            topic = topics.get((reading.device, reading.tag)) or self._topic(reading)
            payload = encode_payload(reading, self._enum_of(reading))
            try:
                info = publish(topic, payload, qos, retain)
            except ValueError:  # over MQTT's size limits: the slow path logs and counts it
                info = None
            if info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                pending.add(info.mid)
            elif info is None or info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                if not await self._publish(topic, payload, deadline):
                    dropped += 1
            else:
                raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}", self.name)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if self._failure is not None:
                    raise SinkError(self._failure, self.name)
        return dropped

    async def _publish(self, topic: str, payload: bytes, deadline: float) -> bool:
        """Hand one message to paho: True once queued, False when it can never be published
        (dropped, logged and counted so that it cannot block the sink), SinkError when the
        batch must be retried."""
        while True:
            try:
                info = self._client.publish(topic, payload, qos=self.config.qos,
                                            retain=self.config.retain)
            except ValueError as exc:  # a topic or payload over MQTT's size limits
                log.error("mqtt: message on %.200s cannot be published, dropped: %s", topic, exc)
                self.counters.inc("gateway_sink_dropped_total", sink=self.name,
                                  reason="unpublishable")
                return False
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending.add(info.mid)
                return True
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}", self.name)
            # paho's queue is full: wait for acknowledgements to make room (never drop).
            await self._wait_for_progress(deadline, "the broker does not acknowledge "
                                          "(paho's queue stays full)")

    async def _wait_for_acks(self, deadline: float) -> None:
        while self._pending:
            await self._wait_for_progress(
                deadline, f"no acknowledgement from the broker in time "
                f"({len(self._pending)} message(s) outstanding)")

    async def _wait_for_progress(self, deadline: float, timeout_reason: str) -> None:
        """Until the next acknowledgement; SinkError on a failure or past the deadline."""
        if self._failure is not None:
            raise SinkError(self._failure, self.name)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise SinkError(timeout_reason, self.name)
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), remaining)
        if self._failure is not None:
            raise SinkError(self._failure, self.name)

    def update_contexts(self, contexts: Mapping[str, DeviceContext]) -> None:
        super().update_contexts(contexts)
        self._topics.clear()  # area or line may have changed

    def _topic(self, reading: Reading) -> str:
        key = (reading.device, reading.tag)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = render_topic(self.config.topic,
                                                     self._levels(reading.device, reading.tag))
        return topic

    def _device_topic(self, device: str) -> str:
        key = (device, "")
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = render_topic(self.config.device_topic,
                                                     self._levels(device, ""))
        return topic

    def _levels(self, device: str, tag: str) -> dict[str, str]:
        ctx = self.contexts.get(device)
        return {"gateway": self.gateway_id, "site": self.site, "device": device, "tag": tag,
                "area": ctx.area if ctx else "", "line": ctx.line if ctx else ""}

    # -- paho callbacks (paho's thread) ------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._answered = True
        if reason.is_failure:
            self._connect_failed(f"broker {self.url} refused the connection: {reason}",
                                 logging.ERROR)
            return
        if self._connect_failures:
            log.info("mqtt: connected to %s after %d failed attempt(s)", self.url,
                     self._connect_failures)
        else:
            log.info("mqtt: connected to %s", self.url)
        self._connect_failures = 0
        self._early_close = None
        self._publish_online()
        self._call(self._set_connected, True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho 2.2 calls this from inside its `except OSError:` and passes no reason.
        reason = sys.exc_info()[1]
        self._connect_failed(f"cannot connect to {self.url}: {reason or 'unknown error'}",
                             logging.WARNING)

    def _closed_before_connack(self, reason: Any) -> None:
        """paho reports only "Unspecified error" when the broker closes the connection right
        after CONNECT. The usual cause is `mqtt://` aimed at a TLS port: the broker took the
        CONNECT for a broken TLS handshake. Probed once per outage (on paho's thread, at most
        PROBE_TIMEOUT), since the answer does not change between retries."""
        if self._early_close is None:
            tls = not self.config.url.startswith("mqtts://") and expects_tls(self._host,
                                                                              self._port)
            self._early_close = (
                f"the broker at {self._host}:{self._port} seems to expect TLS: use mqtts://"
                if tls else f"{self.url} closed the connection before answering CONNECT "
                f"({reason})")
        self._connect_failed(self._early_close, logging.ERROR)

    def _connect_failed(self, message: str, level: int) -> None:
        """The first failure of an outage at `level`, repeats (every 1-30 s) at debug."""
        self._connect_failures += 1
        if self._connect_failures == 1:
            log.log(level, "mqtt: %s (retrying every 1-30 s)", message)
        else:
            log.debug("mqtt: %s (attempt %d)", message, self._connect_failures)

    def _publish_online(self) -> None:
        """The retained online status; retried while paho's queue is full of the messages
        of a batch that failed with the connection."""
        if not self._client.is_connected():
            return
        info = self._client.publish(self.status_topic, self._status("online"), qos=1,
                                    retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.debug("mqtt: paho's queue is full; the online status follows in 0.2 s")
            self._call(self._call_later, 0.2, self._publish_online)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        answered, self._answered = self._answered, False
        if not answered and not self._closing:  # closed before any CONNACK: a failed connect
            self._closed_before_connack(reason)
        elif self._closing:
            log.info("mqtt: disconnected from %s", self.url)
        elif self._connect_failures == 0:  # not after each failed attempt of an outage
            log.warning("mqtt: disconnected from %s: %s", self.url, reason)
        self._call(self._set_connected, False)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acks.append(mid)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._call(self._drain_acks)

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(callback, *args)

    # -- on the event loop -------------------------------------------------------------------

    def _call_later(self, delay: float, callback: Callable[[], object]) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, callback)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if connected:
            self._reconnected.set()
        else:  # a batch in flight fails now rather than at its deadline
            self._failure = f"connection to the MQTT broker at {self.url} lost"
            self._progress.set()

    def _drain_acks(self) -> None:
        self._drain_scheduled = False
        while self._acks:
            self._pending.discard(self._acks.popleft())
        self._progress.set()

    async def wait_ready(self, seconds: float) -> None:
        if self._connected:  # failed while connected: a plain pause
            await asyncio.sleep(seconds)
            return
        self._reconnected.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reconnected.wait(), seconds)

    @property
    def topics_by_tag(self) -> dict[tuple[str, str], str]:
        return dict(self._topics)
