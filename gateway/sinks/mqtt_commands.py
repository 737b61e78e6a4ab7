"""The MQTT sink's command side (`commands: true`): subscribe to every configured device's
command topics, run each command through the router, answer exactly once on `/set/result` (and
on an MQTT 5 response topic, with its correlation data).

paho's callbacks run on the event loop (the session drives paho's socket from it);
`CommandChannel.received` still hands each message over with `call_soon_threadsafe`, so that
it would also work from a paho thread, and handles it in a callback of its own. Commands are
never buffered: a command that cannot be carried out now is refused now. Retained command
messages are ignored (a stale retained `/set` would otherwise write again on every connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.commands import Command, CommandResult, CommandRouter
from gateway.metrics import COUNTERS, Counters
from gateway.sinks import DeviceContext
from gateway.sinks.command_topics import (
    CommandIdError,
    CommandPayloadError,
    DeviceCommands,
    device_commands,
    match_command,
    parse_command,
    result_topic,
    tag_of_level,
)

log = logging.getLogger("gateway.sinks.mqtt")

MAX_WAITING = 100
"""Commands of one sink waiting or running at once; more are refused (a runaway client)."""
RESULT_RETRIES = 50
"""Tries, 0.2 s apart, to hand a result to paho while its queue is full of a failed batch."""
STOP_GRACE = 2.0
"""Seconds `close()` lets running commands finish, so that they still get their result."""


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation: bytes | None = None


class CommandChannel:
    def __init__(self, client: mqtt.Client, router: CommandRouter, template: str,
                 levels: Callable[[str], dict[str, str]], mqtt5: bool, sink: str,
                 counters: Counters = COUNTERS) -> None:
        self._client = client
        self._router = router
        self._template = template
        self._levels = levels
        self._mqtt5 = mqtt5
        self._sink = sink
        self._counters = counters
        self._devices: list[DeviceCommands] = []
        self._subscribed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retained_logged: set[str] = set()
        self.subscribed = threading.Event()
        """Set once the broker acknowledged the command subscriptions (cleared on a new one)."""

    def start(self, loop: asyncio.AbstractEventLoop,
              contexts: Mapping[str, DeviceContext]) -> None:
        self._loop = loop
        self.update(contexts)

    def update(self, contexts: Mapping[str, DeviceContext]) -> None:
        """The devices' command topics (again, after a reload); the subscriptions follow."""
        self._devices = [device_commands(self._template, name, self._levels(name))
                         for name in contexts]
        if self._client.is_connected():
            self.subscribe()

    # -- paho's callbacks -------------------------------------------------------------------

    def subscribe(self) -> None:
        """On every connect (a clean session has no subscriptions) and after a reload."""
        wanted = list(dict.fromkeys(d.filter for d in self._devices))
        gone = [f for f in self._subscribed if f not in wanted]
        if gone:
            self._client.unsubscribe(gone)
        if not wanted:
            self._subscribed = set()
            return
        options: Any = (SubscribeOptions(qos=1, noLocal=True,
                                         retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
                        if self._mqtt5 else 1)
        self.subscribed.clear()
        result, _ = self._client.subscribe([(f, options) for f in wanted])
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._subscribed = set(wanted)
            log.info("mqtt: accepting commands on %s", ", ".join(wanted))
        else:
            log.error("mqtt: cannot subscribe to the command topics: %s",
                      mqtt.error_string(result))

    def on_subscribed(self, reason_codes: list[Any]) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("mqtt: the broker refused the command subscription: %s "
                      "(no command will arrive)", ", ".join(refused))
        else:
            self.subscribed.set()

    def received(self, message: mqtt.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        incoming = Incoming(message.topic, bytes(message.payload), bool(message.retain),
                            getattr(properties, "ResponseTopic", None) or None,
                            getattr(properties, "CorrelationData", None))
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._handle, incoming)

    # -- the event loop ----------------------------------------------------------------------

    def _handle(self, incoming: Incoming) -> None:
        found = match_command(incoming.topic, self._devices)
        if found is None:
            return  # not a configured device's command topic (another template's, say)
        if incoming.retain:
            self._ignore_retained(incoming.topic)
            return
        device, topic_level = found
        tag = tag_of_level(topic_level, self._router.tags_of(device))
        command, problem = _command(device, tag, incoming)
        if problem is None and len(self._tasks) >= MAX_WAITING:
            problem = f"{MAX_WAITING} commands are already waiting: try again later"
        if problem is not None:
            self._answer(incoming, command.id, self._router.refuse(command, problem))
            return
        task = asyncio.get_running_loop().create_task(self._run(command, incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ignore_retained(self, topic: str) -> None:
        self._counters.inc("gateway_sink_commands_ignored_total", sink=self._sink,
                           reason="retained")
        if topic not in self._retained_logged:
            self._retained_logged.add(topic)
            log.warning("mqtt: retained command on %s ignored (a command must be a live "
                        "message; clear it with an empty retained publish)", topic)

    async def _run(self, command: Command, incoming: Incoming) -> None:
        try:
            result = await self._router.execute(command)
        except asyncio.CancelledError:
            self._answer(incoming, command.id, CommandResult(
                False, error="the gateway stopped before the write was confirmed"))
            raise
        self._answer(incoming, command.id, result)

    def _answer(self, incoming: Incoming, command_id: str | None,
                result: CommandResult) -> None:
        payload = json.dumps(result.payload(command_id), default=str).encode()
        properties = None
        if self._mqtt5 and incoming.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = incoming.correlation
        self._publish(result_topic(incoming.topic), payload, properties, RESULT_RETRIES)
        if self._mqtt5 and incoming.response_topic:
            self._publish(incoming.response_topic, payload, properties, RESULT_RETRIES)

    def _publish(self, topic: str, payload: bytes, properties: Properties | None,
                 tries: int) -> None:
        try:
            info = self._client.publish(topic, payload, qos=1, retain=False,
                                        properties=properties)
        except ValueError as exc:  # a response topic with wildcards, say
            log.warning("mqtt: command result cannot be published on %.200s: %s", topic, exc)
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE and tries > 1 and self._loop:
            self._loop.call_later(0.2, self._publish, topic, payload, properties, tries - 1)
        elif info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # NO_CONN: paho keeps a QoS 1 message and sends it after the reconnect.
            log.warning("mqtt: command result on %.200s not published: %s", topic,
                        mqtt.error_string(info.rc))

    async def close(self) -> None:
        """Let running commands finish (they get their result), then cancel the rest."""
        if not self._tasks:
            return
        _, running = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE)
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _command(device: str, tag: str, incoming: Incoming) -> tuple[Command, str | None]:
    """The command the message asks for, or the reason it asks for nothing."""
    reply_to = incoming.response_topic
    try:
        request = parse_command(incoming.payload)
    except CommandIdError as exc:
        return Command(device, tag, None, exc.id, reply_to), str(exc)
    except CommandPayloadError as exc:
        return Command(device, tag, None, None, reply_to), str(exc)
    return Command(device, tag, request.value, request.id, reply_to), None
