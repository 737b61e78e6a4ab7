"""The batch in flight of an MQTT sink: its messages handed to paho and their acknowledgements
(PUBACK at QoS 1, written to the socket at QoS 0). One batch at a time: the delivery loop
awaits each `send()` before the next (gateway/delivery.py), and the batch's state is released
whatever the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.errors import SinkError
from gateway.metrics import Counters

log = logging.getLogger("gateway.sinks.mqtt")

YIELD_EVERY = 100
"""Messages published between two turns of the event loop."""

Message = tuple[str, bytes, int]
"""Topic, payload, and how many readings it carries (1, or a device cycle's)."""


class BatchPublisher:
    """Publishes a batch's messages and waits for all their acknowledgements."""

    def __init__(self, client: mqtt.Client, qos: int, retain: bool, sink: str,
                 counters: Counters) -> None:
        self._client = client
        self._qos = qos
        self._retain = retain
        self._sink = sink
        self._counters = counters
        self._pending: set[int] = set()
        self._progress = asyncio.Event()  # an acknowledgement arrived, or the batch failed
        self._failure: str | None = None
        self._in_flight = False

    def acked(self, mids: Iterable[int]) -> None:
        for mid in mids:
            self._pending.discard(mid)
        self._progress.set()

    def lost(self, reason: str) -> None:
        """The connection dropped: the batch in flight fails now, not at its deadline."""
        self._failure = reason
        self._progress.set()

    async def publish(self, messages: Iterable[Message], deadline: float) -> int:
        """Publish every (topic, payload, readings) and wait for their acknowledgements; how
        many readings could never be published (dropped, logged, counted). SinkError: retry
        the batch later.

        The common case (paho takes the message) stays in the loop without a coroutine per
        message: at QoS 1 paho's own work is most of a message's cost and the sink's share of the
        rest should stay small. Every `YIELD_EVERY` messages the event loop runs (the pollers,
        and paho reading the PUBACKs), since a batch of 1,000 would otherwise hold it for over
        100 ms."""
        assert not self._in_flight, "one batch at a time (the delivery loop's contract)"
        self._in_flight, self._failure = True, None
        self._pending.clear()
        try:
            dropped = await self._publish_all(messages, deadline)
            while self._pending:
                await self._wait_for_progress(
                    deadline, f"no acknowledgement from the broker in time "
                    f"({len(self._pending)} message(s) outstanding)")
            return dropped
        finally:
            self._pending.clear()
            self._in_flight = False

    async def _publish_all(self, messages: Iterable[Message], deadline: float) -> int:
        publish, qos, retain, pending = self._client.publish, self._qos, self._retain, self._pending
        dropped = 0
        for n, (topic, payload, readings) in enumerate(messages, 1):
            try:
                info = publish(topic, payload, qos, retain)
            except ValueError:  # over MQTT's size limits: the slow path logs and counts it
                info = None
            if info is not None and info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                pending.add(info.mid)
            elif info is None or info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                if not await self._publish_one(topic, payload, deadline):
                    dropped += readings
            else:
                raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}", self._sink)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if self._failure is not None:
                    raise SinkError(self._failure, self._sink)
        return dropped

    async def _publish_one(self, topic: str, payload: bytes, deadline: float) -> bool:
        """Hand one message to paho: True once queued, False when it can never be published
        (dropped, logged and counted so that it cannot block the sink), SinkError when the
        batch must be retried."""
        while True:
            try:
                info = self._client.publish(topic, payload, qos=self._qos, retain=self._retain)
            except ValueError as exc:  # a topic or payload over MQTT's size limits
                log.error("mqtt: message on %.200s cannot be published, dropped: %s", topic, exc)
                self._counters.inc("gateway_sink_dropped_total", sink=self._sink,
                                   reason="unpublishable")
                return False
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._pending.add(info.mid)
                return True
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}", self._sink)
            # paho's queue is full: wait for acknowledgements to make room (never drop).
            await self._wait_for_progress(deadline, "the broker does not acknowledge "
                                          "(paho's queue stays full)")

    async def _wait_for_progress(self, deadline: float, timeout_reason: str) -> None:
        """Until the next acknowledgement; SinkError on a failure or past the deadline."""
        if self._failure is not None:
            raise SinkError(self._failure, self._sink)
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise SinkError(timeout_reason, self._sink)
        self._progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), remaining)
        if self._failure is not None:
            raise SinkError(self._failure, self._sink)
