"""Sparkplug B edge node sink (paho-mqtt 2.x), fed from the durable buffer.

Births and data go out at QoS 0, as the spec requires. A batch counts as delivered when a
QoS 1 *barrier* message published after it is acknowledged: the broker reads one connection's
packets in order, so its PUBACK says that every QoS 0 message before it arrived. A connection
that drops before that fails the batch (`SinkError`), and the runtime replays it from the
buffer in the next session, after the births: nothing is lost, a replay may duplicate.

Threads: paho runs its network loop in its own thread. `_wire` (a lock) guards the one fact
both sides need at once: whether this connection's session may publish. paho's thread closes
it on a disconnect and before every CONNECT, so that no message of an old session (with its old
seq) can reach the next connection ahead of its NBIRTH. Everything else lives on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.commands import Command, CommandResult
from gateway.errors import SinkError
from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading
from gateway.sinks import Delivery, DeviceContext, Sink, SinkEnvironment, SinkSettings
from gateway.sinks.mqtt_session import BrokerAddress, log_in, without_nagle
from gateway.sinks.mqtt_wire import device_cycles, level
from gateway.sinks.sparkplug import payload as sp
from gateway.sinks.sparkplug.config import SparkplugSinkConfig
from gateway.sinks.sparkplug.session import (
    AliasTable,
    BdSeqStore,
    Birth,
    Data,
    Death,
    NodeState,
    SequenceCounter,
    Step,
)

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
YIELD_EVERY = 50
"""Messages published between two turns of the event loop."""


def default_state_path(buffer_path: str | Path, sink_name: str) -> Path:
    """Where the bdSeq file goes unless the config says: beside the buffer file."""
    buffer = Path(buffer_path)
    return buffer.with_name(f"{buffer.stem}.{level(sink_name)}.bdseq")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugSink(Sink):
    name = "sparkplug"
    settings_model = SparkplugSinkConfig

    @classmethod
    def from_settings(cls, name: str, settings: SinkSettings,
                      environment: SinkEnvironment) -> SparkplugSink:
        assert isinstance(settings, SparkplugSinkConfig)
        return cls(settings, environment.gateway_id, environment.contexts, name=name,
                   state_path=default_state_path(environment.buffer_path, name))

    def __init__(self, config: SparkplugSinkConfig, gateway_id: str,
                 contexts: Mapping[str, DeviceContext], *, name: str = "sparkplug",
                 state_path: Path | None = None, counters: Counters = COUNTERS) -> None:
        super().__init__(contexts, name)
        self.config = config
        self.counters = counters
        self.delivery = Delivery(batch_size=config.batch_size, max_rate=config.max_rate)
        self.group_id = config.group_id
        self.edge_node_id = config.edge_node_id or gateway_id
        self._node_topic = f"{NAMESPACE}/{self.group_id}/{{}}/{self.edge_node_id}"
        self.barrier_topic = (config.barrier_topic
                              or f"_sparkplug/{self.group_id}/{self.edge_node_id}/barrier")
        self.state_topic = (f"{NAMESPACE}/STATE/{config.primary_host_id}"
                            if config.primary_host_id else None)
        path = Path(config.state_file) if config.state_file else state_path
        self.bdseq_store = BdSeqStore(path or Path("data") / (
            f"sparkplug-{level(self.group_id)}-{level(self.edge_node_id)}.bdseq"))
        self._address = BrokerAddress.parse(config.url)
        self.url = self._address.url  # never the credentials
        self._client_id = config.client_id or f"shopfloor-{gateway_id}-sparkplug"
        self._aliases = AliasTable()
        self._specs: dict[tuple[str, str], sp.MetricSpec] = {}
        self._device_specs: dict[str, dict[str, sp.MetricSpec]] = {}
        """The same specs by device, then tag: a DDATA looks its metrics up without a key
        tuple or a call per reading."""
        self._device_topics: dict[tuple[str, str], str] = {}
        self._seq = SequenceCounter()
        self._state = NodeState()
        self._mismatch_logged: set[tuple[str, str]] = set()
        # Shared with paho's thread, under _wire:
        self._wire = threading.Lock()
        self._wire_open = False
        self._generation = 0
        self._bdseq = 0
        # PUBACKs (and paho's QoS 0 "written" calls) arrive on paho's thread; the loop is woken
        # only while a barrier is awaited, at most one wake-up pending.
        self._published: deque[int] = deque()
        self._barrier_awaited = False
        self._drain_scheduled = False
        # On the event loop:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connect_failures = 0
        self._closing = False
        self._live = False
        self._live_since_ms = 0
        self._host_online = self.state_topic is None
        self._last_state_ts = -1
        self._session_lock = asyncio.Lock()
        self._barrier: tuple[int, asyncio.Future[None]] | None = None
        self._ready = asyncio.Event()
        self._first_answer = asyncio.Event()  # the first session began, or a connect failed
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = self._new_client()

    @property
    def wants_commands(self) -> bool:
        return self.config.commands

    # -- lifecycle ---------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        config = self.config
        # Clean session: a Sparkplug session lives for one connection (a new bdSeq each).
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        log_in(client, config, self._address)
        without_nagle(client)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._connect()

    def _connect(self) -> None:
        self._client.connect_async(self._address.host, self._address.port,
                                   keepalive=max(1, int(self.config.keepalive)))
        self._client.loop_start()  # connects and reconnects by itself, with the delays above

    async def close(self) -> None:
        """NDEATH (a clean DISCONNECT discards the will), then disconnect; never raises."""
        self._closing = True
        self._live = False
        self._first_answer.set()
        for task in list(self._tasks):
            task.cancel()
        with self._wire:
            self._wire_open = False
        try:
            if self._client.is_connected():
                await self._publish_death()
        except Exception as exc:  # close never raises
            log.debug("sparkplug: could not publish NDEATH: %s", exc)
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._client.loop_stop)
        self._connected = False

    async def _publish_death(self) -> None:
        info = self._client.publish(self._node_topic.format("NDEATH"),
                                    sp.node_death(self._bdseq, now_ms()), qos=1)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            await asyncio.to_thread(info.wait_for_publish, 2.0)

    @property
    def connected(self) -> bool:
        """Publishing: connected, the primary host (if any) online, the births sent."""
        return self._live

    @property
    def bdseq(self) -> int:
        return self._bdseq

    async def wait_first_connection(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_answer.wait(), seconds)

    async def wait_ready(self, seconds: float) -> None:
        if self._live:  # failed while live (a timeout): a plain pause
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), seconds)

    def update_contexts(self, contexts: Mapping[str, DeviceContext]) -> None:
        """A reload: tag types may have changed, so every device is born again at its next
        readings (aliases stay)."""
        super().update_contexts(contexts)
        self._specs.clear()
        self._device_specs.clear()
        self._state.forget(contexts)
        for device in self._state.devices.values():
            device.born_tags = None

    # -- delivery ----------------------------------------------------------------------------

    async def send(self, readings: Sequence[Reading]) -> None:
        """Publish the batch (QoS 0) and its barrier (QoS 1); return once the barrier is
        acknowledged. One send at a time (the delivery loop's contract)."""
        if not self._live:
            self._fail(self._not_live_reason())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ack_timeout + len(readings) / 1000
        async with self._session_lock:
            if not self._live:
                self._fail(self._not_live_reason())
            try:
                steps = self._plan(readings)
                for n, step in enumerate(steps, 1):
                    self._emit(step)
                    if n % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                await self._confirm(deadline)
            except SinkError:
                self.counters.inc("gateway_sink_failures_total", sink=self.name)
                raise
        self.counters.inc("gateway_sink_sent_total", len(readings), sink=self.name)

    def _fail(self, reason: str) -> None:
        self.counters.inc("gateway_sink_failures_total", sink=self.name)
        raise SinkError(reason, self.name)

    def _not_live_reason(self) -> str:
        if not self._connected:
            return f"not connected to the MQTT broker at {self.url}"
        if not self._host_online:
            return (f"primary host {self.config.primary_host_id} is offline; "
                    "readings stay buffered")
        return "the Sparkplug session is starting"

    def _plan(self, readings: Sequence[Reading]) -> list[Step]:
        steps: list[Step] = []
        for cycle in device_cycles(readings):
            ctx = self.contexts.get(cycle[0].device)
            known = getattr(ctx, "value_types", None) or {}
            steps += self._state.apply(cycle, known, self._live_since_ms)
        return steps

    def _emit(self, step: Step) -> None:
        if isinstance(step, Data):
            specs = self._device_specs.get(step.device) or {}
            spec = self._spec
            payload, mismatched = sp.device_data(self._seq.take(), now_ms(), [
                (r, specs.get(r.tag) or spec(r), h)
                for r, h in zip(step.readings, step.historical, strict=True)])
            self._publish(self._device_topic("DDATA", step.device), payload)
            self._count_mismatches(step.readings, mismatched)
        elif isinstance(step, Birth):
            payload, mismatched = sp.device_birth(self._seq.take(), now_ms(), [
                (r, self._spec(r)) for r in step.readings])
            self._publish(self._device_topic("DBIRTH", step.device), payload)
            self._count_mismatches(step.readings, mismatched)
        elif isinstance(step, Death):
            self._publish(self._device_topic("DDEATH", step.device),
                          sp.device_death(self._seq.take(), sp.epoch_ms(step.reading.source_ts)))
            log.info("sparkplug: DDEATH %s (%s)", step.device, step.reading.error)

    def _spec(self, reading: Reading) -> sp.MetricSpec:
        key = (reading.device, reading.tag)
        spec = self._specs.get(key)
        if spec is None:
            ctx = self.contexts.get(reading.device)
            type_name = (getattr(ctx, "value_types", None) or {}).get(reading.tag)
            spec = sp.MetricSpec(self._aliases.alias(*key),
                                 sp.datatype_of(type_name, reading.value))
            if type_name or reading.value is not None:  # a bad first reading decides nothing
                self._specs[key] = spec
                self._device_specs.setdefault(reading.device, {})[reading.tag] = spec
        return spec

    def _count_mismatches(self, readings: Sequence[Reading], mismatched: int) -> None:
        if not mismatched:
            return
        self.counters.inc("gateway_sink_dropped_total", mismatched, sink=self.name,
                          reason="type_mismatch")
        device = readings[0].device
        if (device, "") not in self._mismatch_logged:
            self._mismatch_logged.add((device, ""))
            log.warning("sparkplug: %s: %d value(s) do not fit the datatype their metric was "
                        "born with; sent as bad (counted; a reload re-births)", device,
                        mismatched)

    def _device_topic(self, kind: str, device: str) -> str:
        topic = self._device_topics.get((kind, device))
        if topic is None:
            topic = self._device_topics[(kind, device)] = (
                f"{self._node_topic.format(kind)}/{level(device) or '_'}")
        return topic

    def _publish(self, topic: str, payload: bytes, qos: int = 0) -> int:
        """Write one message on this session's connection; its mid. SinkError when the
        session has ended."""
        with self._wire:
            if not self._wire_open:
                raise SinkError(f"connection to the MQTT broker at {self.url} lost", self.name)
            try:
                info = self._client.publish(topic, payload, qos)
            except ValueError as exc:  # over MQTT's size limits
                raise SinkError(f"message on {topic} cannot be published: {exc}",
                                self.name) from None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}", self.name)
        return info.mid

    async def _confirm(self, deadline: float) -> None:
        """Publish the barrier and wait for its PUBACK."""
        assert self._loop is not None
        self._published.clear()
        self._barrier_awaited = True
        try:
            mid = self._publish(self.barrier_topic, b"", qos=1)
            future: asyncio.Future[None] = self._loop.create_future()
            self._barrier = (mid, future)
            self._drain_published()  # the PUBACK may be in already
            remaining = max(0.0, deadline - self._loop.time())
            try:
                await asyncio.wait_for(asyncio.shield(future), remaining)
            except TimeoutError:
                raise SinkError("no confirmation from the broker in time", self.name) from None
        finally:
            self._barrier = None
            self._barrier_awaited = False

    # -- sessions (event loop) ---------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _begin_session(self, generation: int) -> None:
        """NBIRTH and every known device's DBIRTH, then data may flow."""
        async with self._session_lock:
            if self._live or self._closing or not self._host_online:
                return
            with self._wire:
                if generation != self._generation or not self._connected:
                    return
                self._wire_open = True
            self._live_since_ms = now_ms()
            try:
                self._publish_births()
            except SinkError as exc:
                log.debug("sparkplug: births interrupted: %s", exc)
                return
            self._live = True
            self._ready.set()
            self._first_answer.set()
            log.info("sparkplug: edge node %s/%s online (bdSeq %d)", self.group_id,
                     self.edge_node_id, self._bdseq)

    def _publish_births(self) -> None:
        self._publish(self._node_topic.format("NBIRTH"),
                      sp.node_birth(self._bdseq, self._seq.birth(), now_ms()))
        for birth in self._state.births():
            self._emit(birth)

    async def _rebirth(self) -> None:
        async with self._session_lock:
            if not self._live:
                return  # the next session's births follow anyway
            log.info("sparkplug: Rebirth requested by NCMD")
            try:
                self._publish_births()
            except SinkError as exc:
                log.debug("sparkplug: rebirth interrupted: %s", exc)

    async def _host_went_offline(self) -> None:
        """Sparkplug 3.0: end the session (NDEATH) and connect anew, then wait for the host."""
        async with self._session_lock:
            self._live = False
            self._ready.clear()
            with self._wire:
                self._wire_open = False
            log.warning("sparkplug: primary host %s is offline: NDEATH, reconnecting; readings "
                        "stay buffered until it is back", self.config.primary_host_id)
            with contextlib.suppress(Exception):
                await self._publish_death()
            await asyncio.to_thread(self._reconnect_now)

    def _reconnect_now(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        if not self._closing:
            self._connect()

    def _connection_up(self, generation: int) -> None:
        self._connected = True
        self._host_online = self.state_topic is None
        if self._host_online:
            self._spawn(self._begin_session(generation))

    def _connection_down(self) -> None:
        self._connected = False
        self._first_answer.set()
        self._live = False
        self._ready.clear()
        self._published.clear()
        if self._barrier is not None and not self._barrier[1].done():
            self._barrier[1].set_exception(
                SinkError(f"connection to the MQTT broker at {self.url} lost", self.name))

    def _handle_message(self, topic: str, data: bytes) -> None:
        if topic == self.state_topic:
            self._handle_state(data)
        elif topic == self._node_topic.format("NCMD"):
            self._handle_ncmd(data)
        elif topic.startswith(self._node_topic.format("DCMD") + "/"):
            self._handle_dcmd(topic, data)

    # -- DCMD: writes (event loop) -----------------------------------------------------------

    def _handle_dcmd(self, topic: str, data: bytes) -> None:
        """Each metric of a DCMD, by name or alias, goes to the router in order; a write that
        is carried out is answered, as Sparkplug hosts expect, by a DDATA of the metric with
        the value read back. Refusals have no answer in Sparkplug: logged and counted."""
        if not self.config.commands or self.commands is None:
            self._refuse_dcmd(f"DCMD on {topic}: commands are not enabled on this gateway")
            return
        device_level = topic.rsplit("/", 1)[1]
        device = next((name for name in self.contexts
                       if (level(name) or "_") == device_level), None)
        if device is None:
            self._refuse_dcmd(f"DCMD on {topic}: no device {device_level!r} is configured")
            return
        try:
            metrics = sp.command_metrics(data)
        except sp.PayloadError as exc:
            self._refuse_dcmd(f"DCMD for {device}: {exc}")
            return
        for metric in metrics:
            tag = self._dcmd_tag(device, metric)
            if tag is None:
                self._refuse_dcmd(f"DCMD for {device}: metric {metric.name or metric.alias!r} "
                                  "is not one of the device's metrics")
                continue
            self._spawn(self._run_dcmd(Command(device, tag, metric.value)))

    def _dcmd_tag(self, device: str, metric: sp.CommandMetric) -> str | None:
        if metric.name:
            return metric.name  # the router answers an unknown name
        key = self._aliases.key_of(metric.alias) if metric.alias is not None else None
        return key[1] if key is not None and key[0] == device else None

    def _refuse_dcmd(self, message: str) -> None:
        log.warning("sparkplug: %s; refused", message)
        self.counters.inc("gateway_sink_commands_refused_total", sink=self.name)

    async def _run_dcmd(self, command: Command) -> None:
        assert self.commands is not None
        result = await self.commands.execute(command)
        if not result.ok:
            self._refuse_dcmd(f"DCMD {command.device}.{command.tag} = {command.value!r}: "
                              f"{result.error}")
            return
        self._publish_written(command, result)

    def _publish_written(self, command: Command, result: CommandResult) -> None:
        """The DDATA of a written metric, if the session has born it (else the next DBIRTH
        carries the value)."""
        state = self._state.devices.get(command.device)
        if not self._live or state is None or state.born_tags is None \
                or command.tag not in state.born_tags:
            return
        reading = Reading(device=command.device, tag=command.tag,
                          value=result.value,
                          source_ts=result.ts)
        payload, _ = sp.device_data(self._seq.take(), now_ms(),
                                    [(reading, self._spec(reading), False)])
        try:
            self._publish(self._device_topic("DDATA", command.device), payload)
        except SinkError as exc:
            log.debug("sparkplug: DDATA of a write not sent: %s", exc)

    def _handle_ncmd(self, data: bytes) -> None:
        try:
            rebirth = sp.asks_rebirth(data)
        except sp.PayloadError as exc:
            log.warning("sparkplug: NCMD ignored: %s", exc)
            return
        if rebirth:
            self._spawn(self._rebirth())
        else:
            log.warning("sparkplug: NCMD ignored: only Node Control/Rebirth is supported")

    def _handle_state(self, data: bytes) -> None:
        """The primary host's retained STATE; one older than the last one seen is ignored."""
        try:
            state = json.loads(data)
            online = state["online"]
            timestamp = state.get("timestamp", 0)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("sparkplug: STATE of %s ignored: not {\"online\": ..., "
                        "\"timestamp\": ...}", self.config.primary_host_id)
            return
        if not isinstance(online, bool) or not isinstance(timestamp, int):
            log.warning("sparkplug: STATE of %s ignored: online must be a boolean, timestamp "
                        "an integer", self.config.primary_host_id)
            return
        if timestamp < self._last_state_ts:
            return
        self._last_state_ts = timestamp
        if online and not self._host_online:
            self._host_online = True
            self._spawn(self._begin_session(self._generation))
        elif not online and self._host_online:
            self._host_online = False
            self._spawn(self._host_went_offline())

    def _drain_published(self) -> None:
        self._drain_scheduled = False
        barrier = self._barrier
        while self._published:
            mid = self._published.popleft()
            if barrier is not None and mid == barrier[0] and not barrier[1].done():
                barrier[1].set_result(None)

    # -- paho callbacks (paho's thread) ------------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """Every CONNECT is a new session: the next bdSeq, in the will and the NBIRTH."""
        with self._wire:
            self._wire_open = False
            self._generation += 1
            self._bdseq = self.bdseq_store.next()
            client.will_set(self._node_topic.format("NDEATH"),
                            sp.node_death(self._bdseq, now_ms()), qos=1, retain=False)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._connect_failed(f"broker {self.url} refused the connection: {reason}",
                                 logging.ERROR)
            return
        topics = [(self._node_topic.format("NCMD"), 1),
                  (self._node_topic.format("DCMD") + "/+", 1)]
        if self.state_topic:
            topics.append((self.state_topic, 1))
        client.subscribe(topics)
        log.info("sparkplug: connected to %s (bdSeq %d)%s", self.url, self._bdseq,
                 f" after {self._connect_failures} failed attempt(s)"
                 if self._connect_failures else "")
        self._connect_failures = 0
        with self._wire:
            generation = self._generation
        self._call(self._connection_up, generation)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho 2.2 calls this from inside its `except OSError:` and passes no reason.
        reason = sys.exc_info()[1]
        self._connect_failed(f"cannot connect to {self.url}: {reason or 'unknown error'}",
                             logging.WARNING)

    def _connect_failed(self, message: str, level: int) -> None:
        """The first failure of an outage at `level`, repeats (every 1-30 s) at debug."""
        self._call(self._first_answer.set)
        self._connect_failures += 1
        if self._connect_failures == 1:
            log.log(level, "sparkplug: %s (retrying every 1-30 s)", message)
        else:
            log.debug("sparkplug: %s (attempt %d)", message, self._connect_failures)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        with self._wire:
            self._wire_open = False
        if self._closing:
            log.info("sparkplug: disconnected from %s", self.url)
        elif self._connect_failures == 0:
            log.warning("sparkplug: disconnected from %s: %s", self.url, reason)
        self._call(self._connection_down)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if not self._barrier_awaited:
            return  # a QoS 0 message written: nobody waits for it
        self._published.append(mid)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._call(self._drain_published)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
                    ) -> None:
        self._call(self._handle_message, message.topic, bytes(message.payload))

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(callback, *args)
