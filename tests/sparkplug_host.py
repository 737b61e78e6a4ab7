"""A small Sparkplug B host application for tests: subscribes to spBv1.0/#, decodes with the raw
protobuf schema (not with the sink's encoder), tracks births, aliases and seq, and records every
breach of the session rules, so that a test reads "every DDATA alias was born, seq never skips".
"""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from gateway.sinks.sparkplug.sparkplug_b_pb2 import Payload

_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}
_ARRAY_FORMATS = {22: "b", 23: "h", 24: "i", 25: "q", 26: "B", 27: "H", 28: "I", 29: "Q",
                  30: "f", 31: "d"}


def decode_value(metric: Payload.Metric, datatype: int) -> Any:
    """A metric's value by the datatype it was born with, as a host reads it."""
    if metric.is_null:
        return None
    if datatype in _SIGNED_BITS:  # two's complement, sign-extended to the field's width
        raw = metric.int_value if datatype != 4 else metric.long_value
        bits = _SIGNED_BITS[datatype]
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    if datatype in (5, 6, 7):
        return metric.int_value
    if datatype == 8:
        return metric.long_value
    if datatype == 9:
        return metric.float_value
    if datatype == 10:
        return metric.double_value
    if datatype == 11:
        return metric.boolean_value
    if datatype == 12:
        return metric.string_value
    data = metric.bytes_value
    if datatype in _ARRAY_FORMATS:
        fmt = _ARRAY_FORMATS[datatype]
        return struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data)
    if datatype == 32:
        (count,) = struct.unpack("<I", data[:4])
        return tuple(bool(data[4 + i // 8] & (0x80 >> (i % 8))) for i in range(count))
    if datatype == 33:
        return tuple(part.decode() for part in data.split(b"\0")[:-1])
    raise AssertionError(f"datatype {datatype} not decoded by the test host")


def quality_of(metric: Payload.Metric) -> int:
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=True):
        if key == "Quality":
            return int(value.int_value)
    return 192


@dataclass
class Point:
    """One metric of a DBIRTH or DDATA, resolved by the host."""

    device: str
    name: str
    value: Any
    timestamp: int
    historical: bool
    quality: int
    kind: str  # DBIRTH | DDATA


@dataclass
class Received:
    topic: str
    kind: str
    device: str | None
    payload: Payload
    retain: bool


@dataclass
class _Session:
    aliases: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)
    last_seq: int | None = None


class SparkplugHost:
    """Subscribes to one edge node's topics and checks the session rules as messages come."""

    def __init__(self, host: str, port: int, group: str, edge_node: str,
                 persistent: bool = False) -> None:
        """`persistent`: a session the broker keeps (clean_session off), so that messages
        published while the host reconnects are queued for it."""
        self.group = group
        self.edge_node = edge_node
        self.received: list[Received] = []
        self.points: list[Point] = []
        self.violations: list[str] = []
        self._session: _Session | None = None
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=f"sparkplug-host-{uuid.uuid4().hex[:12]}",
                                   clean_session=not persistent)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{group}/#", 1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_disconnect = lambda *_: self._lost_connection()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        self.wait_subscribed()

    def _lost_connection(self) -> None:
        """What was published while the host was away is gone (a clean session): the NBIRTH
        of the edge node's reconnect may be among it, so the next message's seq cannot be
        checked; the one after it can."""
        self._subscribed.clear()
        with self._lock:
            if self._session is not None:
                self._session.last_seq = None

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        if not self._subscribed.wait(timeout):
            raise TimeoutError("the Sparkplug host could not subscribe")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # -- as a host application ---------------------------------------------------------------

    def publish_state(self, host_id: str, online: bool, timestamp: int | None = None) -> None:
        body = json.dumps({"online": online,
                           "timestamp": timestamp if timestamp is not None
                           else time.time_ns() // 1_000_000})
        self._client.publish(f"spBv1.0/STATE/{host_id}", body, qos=1,
                             retain=True).wait_for_publish(5)

    def request_rebirth(self) -> None:
        payload = Payload(timestamp=time.time_ns() // 1_000_000)
        metric = payload.metrics.add()
        metric.name = "Node Control/Rebirth"
        metric.datatype = 11
        metric.boolean_value = True
        self._client.publish(f"spBv1.0/{self.group}/NCMD/{self.edge_node}",
                             payload.SerializeToString(), qos=0).wait_for_publish(5)

    # -- reading what came -------------------------------------------------------------------

    def of_kind(self, kind: str, device: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.received
                    if m.kind == kind and (device is None or m.device == device)]

    def kinds(self) -> list[str]:
        with self._lock:
            return [m.kind if m.device is None else f"{m.kind}:{m.device}"
                    for m in self.received]

    def data_points(self, device: str | None = None, name: str | None = None) -> list[Point]:
        with self._lock:
            return [p for p in self.points if p.kind == "DDATA"
                    and (device is None or p.device == device)
                    and (name is None or p.name == name)]

    def wait(self, predicate: Callable[[SparkplugHost], bool], timeout: float = 15.0,
             what: str = "messages") -> None:
        """Blocking: call it through asyncio.to_thread from a coroutine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; got "
                             f"{self.kinds()[-20:]} (last 20), violations {self.violations}")

    # -- the checks (paho's thread) ----------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[3] != self.edge_node:
            return
        kind, device = parts[2], (parts[4] if len(parts) > 4 else None)
        payload = Payload()
        try:
            payload.ParseFromString(msg.payload)
        except Exception as exc:
            with self._lock:
                self.violations.append(f"{msg.topic}: undecodable payload ({exc})")
            return
        with self._lock:
            self.received.append(Received(msg.topic, kind, device, payload, bool(msg.retain)))
            self._check(kind, device, payload)

    def _check(self, kind: str, device: str | None, payload: Payload) -> None:
        if kind in ("NCMD", "DCMD"):
            return
        if kind == "NDEATH":
            self._session = None
            return
        if kind == "NBIRTH":
            if payload.seq != 0:
                self.violations.append(f"NBIRTH with seq {payload.seq}")
            self._session = _Session(last_seq=0)
            return
        session = self._session
        if session is None:
            self.violations.append(f"{kind} {device} outside a session (no NBIRTH)")
            return
        expected = ((session.last_seq or 0) + 1) % 256
        if session.last_seq is not None and payload.seq != expected:
            self.violations.append(f"{kind} {device}: seq {payload.seq}, expected {expected}")
        session.last_seq = payload.seq
        assert device is not None
        if kind == "DBIRTH":
            session.aliases[device] = {m.alias: (m.name, m.datatype) for m in payload.metrics}
            self._record(kind, device, payload, session.aliases[device])
        elif kind == "DDATA":
            born = session.aliases.get(device)
            if born is None:
                self.violations.append(f"DDATA {device} before its DBIRTH")
                return
            unborn = [m.alias for m in payload.metrics if m.alias not in born]
            if unborn:
                self.violations.append(f"DDATA {device}: aliases {unborn} never born")
                return
            self._record(kind, device, payload, born)
        elif kind == "DDEATH":
            session.aliases.pop(device, None)

    def _record(self, kind: str, device: str, payload: Payload,
                born: dict[int, tuple[str, int]]) -> None:
        for metric in payload.metrics:
            name, datatype = born[metric.alias]
            self.points.append(Point(device, name, decode_value(metric, datatype),
                                     metric.timestamp, metric.is_historical,
                                     quality_of(metric), kind))
