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
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway import __version__
from gateway.config import MqttSinkConfig
from gateway.errors import SinkError
from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading, utc_now
from gateway.sinks import DeviceContext, Sink
from gateway.sinks.topics import (
    device_cycles,
    encode_device_payload,
    encode_payload,
    render_topic,
    status_topic,
)

log = logging.getLogger(__name__)
_QUEUE_FULL_RETRIES = 200  # x 50 ms: how long a full paho queue may take to drain


class MqttSink(Sink):
    name = "mqtt"
    flush_interval = 0.0

    def __init__(self, config: MqttSinkConfig, gateway_id: str, site: str,
                 contexts: Mapping[str, DeviceContext], counters: Counters = COUNTERS) -> None:
        super().__init__(contexts)
        self.config = config
        self.gateway_id = gateway_id
        self.site = site
        self.counters = counters
        self.batch_size = config.batch_size
        self.status_topic = status_topic(site, gateway_id)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._pending: set[int] = set()
        self._batch_done = asyncio.Event()
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
        if config.username:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        if config.url.startswith("mqtts://"):
            client.tls_set(ca_certs=config.ca, certfile=config.cert, keyfile=config.key,
                           cert_reqs=ssl.CERT_REQUIRED)
            client.tls_insecure_set(config.insecure)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        # paho silently loses QoS 1 messages past 65,535 queued: cap the queue well below.
        client.max_queued_messages_set(config.max_queued_messages)
        client.max_inflight_messages_set(min(1000, config.max_queued_messages))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        url = urlsplit(self.config.url)
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self._client.connect_async(url.hostname or "127.0.0.1", port,
                                   keepalive=max(1, int(self.config.keepalive)))
        self._client.loop_start()  # reconnects by itself, with the delays set above

    async def close(self) -> None:
        try:
            if self._connected:
                info = self._client.publish(self.status_topic, self._status("offline"), qos=1,
                                            retain=True)
                await asyncio.to_thread(info.wait_for_publish, 2.0)
            self._client.disconnect()
        except Exception as exc:  # close never raises
            log.debug("mqtt: error while closing: %s", exc)
        finally:
            await asyncio.to_thread(self._client.loop_stop)

    @property
    def connected(self) -> bool:
        return self._connected

    def _status(self, state: str) -> bytes:
        status: dict[str, Any] = {"state": state, "gateway": self.gateway_id}
        if state == "online":
            status |= {"since": utc_now().isoformat().replace("+00:00", "Z"),
                       "version": __version__}
        return json.dumps(status).encode()

    # -- delivery ----------------------------------------------------------------------------

    async def send(self, readings: Sequence[Reading]) -> None:
        if not self._connected:
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise SinkError("not connected to the MQTT broker", self.name)
        self._failure = None
        self._pending.clear()
        if self.config.payload == "device":
            for cycle in device_cycles(readings):
                await self._publish(self._device_topic(cycle[0].device),
                                    encode_device_payload(cycle))
        else:
            for reading in readings:
                await self._publish(self._topic(reading), encode_payload(reading))
        await self._wait_for_acks(10.0 + len(readings) / 1000)
        self.counters.inc("gateway_sink_sent_total", len(readings), sink=self.name)

    async def _publish(self, topic: str, payload: bytes) -> None:
        for _ in range(_QUEUE_FULL_RETRIES):
            info = self._client.publish(topic, payload, qos=self.config.qos,
                                        retain=self.config.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending.add(info.mid)
                return
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._fail_batch(f"publish failed: {mqtt.error_string(info.rc)}")
                break
            # paho's queue is full: wait for acknowledgements to make room (never drop).
            await asyncio.sleep(0.05)
            if self._failure is not None:
                break
        else:
            self._fail_batch("the broker does not acknowledge (paho's queue stays full)")
        await self._wait_for_acks(0)

    async def _wait_for_acks(self, seconds: float) -> None:
        """Until every pending message is acknowledged; raises SinkError on a failure."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self._pending and self._failure is None:
            self._batch_done.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                self._fail_batch("no acknowledgement from the broker in time")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._batch_done.wait(), remaining)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._pending.clear()
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise SinkError(failure, self.name)

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

    def _fail_batch(self, reason: str) -> None:
        self._failure = reason
        self._batch_done.set()

    # -- paho callbacks (paho's thread) ------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("mqtt: broker %s refused the connection: %s", self.config.url, reason)
            return
        log.info("mqtt: connected to %s", self.config.url)
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self._call(self._set_connected, True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        log.warning("mqtt: disconnected from %s: %s", self.config.url, reason)
        self._call(self._set_connected, False)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acks.append(mid)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._call(self._drain_acks)

    def _call(self, callback: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    # -- on the event loop -------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        if connected:
            self._reconnected.set()
        if not connected and self._pending:
            self._fail_batch("connection to the MQTT broker lost while waiting for acks")

    def _drain_acks(self) -> None:
        self._drain_scheduled = False
        while self._acks:
            self._pending.discard(self._acks.popleft())
        if not self._pending:
            self._batch_done.set()

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
