"""MQTT sink (paho-mqtt 2.x): one message per reading (or per device cycle), acknowledged
before the buffer moves on. The connection is an `MqttSession` (gateway/sinks/mqtt_session.py),
the batch in flight a `BatchPublisher` (gateway/sinks/mqtt_batch.py), the wire format
gateway/sinks/mqtt_wire.py. While the broker is unreachable `send()` fails at once, so the backlog
stays in the durable buffer rather than in paho's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence

from gateway.config import MqttSinkConfig
from gateway.errors import SinkError
from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading
from gateway.sinks import Delivery, DeviceContext, Sink, SinkEnvironment, SinkSettings
from gateway.sinks.mqtt_batch import BatchPublisher, Message
from gateway.sinks.mqtt_commands import CommandChannel
from gateway.sinks.mqtt_session import MqttSession, expects_tls
from gateway.sinks.mqtt_wire import (
    device_cycles,
    encode_device_payload,
    encode_payload,
    render_topic,
    status_topic,
)

__all__ = ["MqttSink", "expects_tls"]

log = logging.getLogger(__name__)


class MqttSink(Sink):
    name = "mqtt"
    settings_model = MqttSinkConfig
    ack_timeout = 10.0
    """Seconds a batch may wait for its acknowledgements, plus 1 ms per message."""

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
        self.session = MqttSession(config, gateway_id, self.status_topic)
        self.url = self.session.url
        self.mqtt5 = self.session.mqtt5
        self._batch = BatchPublisher(self.session.client, config.qos, config.retain, self.name,
                                     counters)
        self.session.on_acks = self._batch.acked
        self.session.on_lost = self._batch.lost
        self._topics: dict[tuple[str, str], str] = {}
        self._commands: CommandChannel | None = None

    @property
    def wants_commands(self) -> bool:
        return self.config.commands

    @property
    def accepting_commands(self) -> bool:
        """The broker acknowledged the command subscriptions of this connection."""
        return self._commands is not None and self._commands.subscribed.is_set()

    @property
    def connected(self) -> bool:
        return self.session.connected

    async def start(self) -> None:
        if self.config.commands:
            self._start_commands(asyncio.get_running_loop())
        await self.session.start()

    def _start_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.commands is None:
            log.error("mqtt: %s has commands: true but no command router: commands are "
                      "not accepted", self.name)
            return
        channel = self._commands = CommandChannel(
            self.session.client, self.commands, self.config.topic,
            lambda device: self._levels(device, ""), self.mqtt5, self.name, self.counters)
        self.session.on_connected = channel.subscribe  # a clean session has no subscriptions
        self.session.on_message = channel.received
        self.session.on_subscribe = channel.on_subscribed
        channel.start(loop, self.contexts)

    async def close(self) -> None:
        if self._commands is not None:
            await self._commands.close()
        await self.session.close()

    async def wait_first_connection(self, seconds: float) -> None:
        await self.session.wait_first_answer(seconds)

    async def wait_ready(self, seconds: float) -> None:
        await self.session.wait_ready(seconds)

    async def send(self, readings: Sequence[Reading]) -> None:
        """Publish the batch; return once every message is acknowledged."""
        if not self.session.connected:
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise SinkError(f"not connected to the MQTT broker at {self.url}", self.name)
        deadline = asyncio.get_running_loop().time() + self.ack_timeout + len(readings) / 1000
        messages = (self._device_messages(readings) if self.config.payload == "device"
                    else self._tag_messages(readings))
        try:
            dropped = await self._batch.publish(messages, deadline)
        except SinkError:
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise
        self.counters.inc("gateway_sink_sent_total", len(readings) - dropped, sink=self.name)

    def _tag_messages(self, readings: Sequence[Reading]) -> Iterator[Message]:
        topics = self._topics
        for reading in readings:
            topic = topics.get((reading.device, reading.tag)) or self._topic(reading)
            yield topic, encode_payload(reading, self._enum_of(reading)), 1

    def _device_messages(self, readings: Sequence[Reading]) -> Iterator[Message]:
        for cycle in device_cycles(readings):
            yield self._device_topic(cycle[0].device), encode_device_payload(cycle), len(cycle)

    def _enum_of(self, reading: Reading) -> Mapping[int, str] | None:
        context = self.contexts.get(reading.device)
        return context.enums.get(reading.tag) if context is not None and context.enums else None

    def update_contexts(self, contexts: Mapping[str, DeviceContext]) -> None:
        super().update_contexts(contexts)
        self._topics.clear()  # area or line may have changed
        if self._commands is not None:
            self._commands.update(contexts)

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

    @property
    def topics_by_tag(self) -> dict[tuple[str, str], str]:
        return dict(self._topics)
