"""The quick-ack client against paho's own: the same bytes, cut into the same socket reads,
give the same callbacks (message ids, reason codes, incoming messages), the same publishes give
the same bytes on the wire however the socket takes them, and neither the read-ahead nor the
collected writes outlive a connection."""

from __future__ import annotations

import itertools
import struct
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import _ConnectionState
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sinks.mqtt_client import (
    SEND_CAP,
    QuickAckClient,
    new_client,
    paho_internals_present,
)

pytestmark = pytest.mark.unit

PINGRESP = b"\xd0\x00"


class ChunkedSocket:
    """What a non-blocking socket returns: the chunks in order (None: nothing there yet)."""

    def __init__(self, chunks: list[bytes | None]) -> None:
        self.chunks: deque[bytes | None] = deque(chunks)
        self.closed = False

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError
        chunk = self.chunks.popleft()
        if chunk is None:
            raise BlockingIOError
        if len(chunk) > size:
            self.chunks.appendleft(chunk[size:])
        return chunk[:size]

    def close(self) -> None:
        self.closed = True


def puback(mid: int, reason: int | None = None) -> bytes:
    body = struct.pack("!H", mid) + (b"" if reason is None else bytes([reason, 0]))
    return bytes([0x40, len(body)]) + body


def publish(topic: str, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic.encode() + payload
    return bytes([0x30, len(body)]) + body


def received(client_type: type[mqtt.Client], stream: bytes, cuts: list[int], mids: list[int],
             protocol: int = mqtt.MQTTv311) -> list[tuple[Any, ...]]:
    """The callbacks a client makes reading `stream`, cut at `cuts`, with a pause (nothing
    to read) after each piece."""
    client = client_type(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    calls: list[tuple[Any, ...]] = []
    client.on_publish = lambda c, u, mid, reason, props: calls.append(
        ("ack", mid, reason.value, reason.getName()))
    client.on_message = lambda c, u, message: calls.append(
        ("message", message.topic, message.payload))
    for mid in mids:
        client._out_messages[mid] = mqtt.MQTTMessage(mid=mid)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    pieces: list[bytes | None] = []
    for start, end in itertools.pairwise(bounds):
        pieces += [stream[start:end], None]
    sock = ChunkedSocket(pieces)
    client._sock = sock  # type: ignore[assignment]
    for _ in range(10 * len(pieces) + 10):
        if not sock.chunks and not getattr(client, "buffered", lambda: 0)():
            break
        client.loop_read()
    assert not sock.chunks
    return calls


@given(mids=st.lists(st.integers(1, 65535), min_size=1, max_size=40, unique=True),
       extra=st.sampled_from(["", "ping", "message"]), data=st.data())
def test_acks_read_ahead_match_paho_byte_for_byte(mids: list[int], extra: str,
                                                  data: st.DataObject) -> None:
    stream = b"".join(puback(mid) for mid in mids)
    if extra == "ping":
        stream = PINGRESP + stream
    elif extra == "message":
        stream += publish("plant/cmd", b'{"set": 1}')
    cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))
    ours = received(QuickAckClient, stream, cuts, mids)
    assert ours == received(mqtt.Client, stream, cuts, mids)
    assert [call[1] for call in ours if call[0] == "ack"] == mids


@given(packets=st.lists(st.one_of(st.integers(1, 65535), st.sampled_from(["ping", "message"])),
                        min_size=1, max_size=40), data=st.data())
def test_acks_among_other_packets_match_paho_wherever_the_socket_cuts(
        packets: list[int | str], data: st.DataObject) -> None:
    pieces = {"ping": PINGRESP, "message": publish("plant/cmd", b'{"set": 1}')}
    stream = b"".join(pieces[p] if isinstance(p, str) else puback(p) for p in packets)
    mids = list(dict.fromkeys(p for p in packets if isinstance(p, int)))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))
    assert received(QuickAckClient, stream, cuts, mids) == received(mqtt.Client, stream, cuts,
                                                                    mids)


def test_a_run_of_acks_read_ahead_is_taken_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"paho": 0}
    paho_read = mqtt.Client._packet_read

    def counted(self: mqtt.Client) -> Any:
        calls["paho"] += 1
        return paho_read(self)

    monkeypatch.setattr(mqtt.Client, "_packet_read", counted)
    mids = list(range(1, 201))
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client._sock = ChunkedSocket([])  # type: ignore[assignment]
    client._received = b"".join(puback(m) for m in mids)  # read ahead, nothing more arrived
    acked: list[int] = []
    client.on_publish = lambda c, u, mid, reason, props: acked.append(mid)
    for mid in mids:
        client._out_messages[mid] = mqtt.MQTTMessage(mid=mid)
    client._last_bytes_received = 0.0
    client.loop_read()
    assert acked == mids and not client._out_messages and client.buffered() == 0
    assert calls["paho"] == 1  # only to find the socket empty
    assert client._last_bytes_received > 0.0  # the keepalive sees the broker alive


def test_acks_after_a_callback_closed_the_connection_are_not_taken() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client._sock = ChunkedSocket([])  # type: ignore[assignment]
    client._received = puback(1) + puback(2) + puback(3)
    acked: list[int] = []

    def close_on_first(c: mqtt.Client, u: Any, mid: int, reason: Any, props: Any) -> None:
        acked.append(mid)
        client._sock_close()

    client.on_publish = close_on_first
    for mid in (1, 2, 3):
        client._out_messages[mid] = mqtt.MQTTMessage(mid=mid)
    client.loop_read()
    assert acked == [1] and client.buffered() == 0


def test_a_malformed_ack_is_refused_as_paho_refuses_it() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client._sock = ChunkedSocket([])  # type: ignore[assignment]
    client._received = b"\x40\x03\x00\x01\x00" + puback(2)  # 3.1.1 has no reason byte
    acked: list[int] = []
    client.on_publish = lambda c, u, mid, reason, props: acked.append(mid)
    for mid in (1, 2):
        client._out_messages[mid] = mqtt.MQTTMessage(mid=mid)
    assert client._packet_read() == mqtt.MQTT_ERR_PROTOCOL
    assert acked == []


def test_an_ack_for_a_message_not_outstanding_is_ignored_as_paho_does() -> None:
    stream = puback(7) + puback(8)
    assert received(QuickAckClient, stream, [], [8]) == [("ack", 8, 0, "Success")]


def test_mqtt5_acks_keep_their_reason_code() -> None:
    stream = puback(3, reason=0x10) + puback(4)  # 0x10: no matching subscribers
    ours = received(QuickAckClient, stream, [5], [3, 4], protocol=mqtt.MQTTv5)
    assert ours == received(mqtt.Client, stream, [5], [3, 4], protocol=mqtt.MQTTv5)
    assert ours[0] == ("ack", 3, 0x10, "No matching subscribers")


def test_a_closed_connection_drops_what_was_read_ahead() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    sock = ChunkedSocket([puback(1) + puback(2)])
    client._sock = sock  # type: ignore[assignment]
    assert client._sock_recv(1) == b"\x40"
    assert client.buffered() == 7
    client._sock_close()
    assert sock.closed and client.buffered() == 0


def test_a_read_larger_than_what_arrived_takes_it_whole() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client._sock = ChunkedSocket([b"abc", None, b""])  # type: ignore[assignment]
    assert client._sock_recv(10) == b"abc" and client.buffered() == 0
    with pytest.raises(BlockingIOError):
        client._sock_recv(1)
    assert client._sock_recv(1) == b""  # the broker closed the connection


def test_this_paho_has_what_the_quick_client_overrides() -> None:
    assert paho_internals_present()
    assert type(new_client(CallbackAPIVersion.VERSION2, client_id="t")) is QuickAckClient


class WritableSocket:
    """A non-blocking socket's send: each call takes at most the next limit (None: full)."""

    def __init__(self, limits: list[int | None]) -> None:
        self.limits: deque[int | None] = deque(limits)
        self.sent = bytearray()
        self.calls = 0

    def send(self, data: bytes | bytearray) -> int:
        self.calls += 1
        limit = self.limits.popleft() if self.limits else len(data)
        if limit is None:
            raise BlockingIOError
        self.sent += bytes(data[:limit])
        return min(limit, len(data))

    def recv(self, size: int) -> bytes:
        raise BlockingIOError

    def close(self) -> None:
        pass


def written(client_type: type[mqtt.Client], payloads: list[bytes],
            limits: list[int | None]) -> tuple[bytes, int]:
    """The bytes a client writes for QoS 1 publishes of `payloads`, and its send calls."""
    client = client_type(CallbackAPIVersion.VERSION2, client_id="t")
    client.on_socket_register_write = lambda *args: None  # an external loop: queue, then write
    client.max_inflight_messages_set(0)  # as the sink: no window
    sock = WritableSocket(limits)
    client._sock = sock  # type: ignore[assignment]
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    for payload in payloads:
        client.publish("plant/line/press/tag", payload, qos=1)
    for _ in range(len(limits) + len(payloads) + 10):
        if not client.want_write():
            break
        client.loop_write()
    assert not client.want_write()
    return bytes(sock.sent), sock.calls


@given(payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=60),
       limits=st.lists(st.one_of(st.none(), st.integers(1, 5000)), max_size=12))
def test_writes_collected_match_paho_byte_for_byte(payloads: list[bytes],
                                                   limits: list[int | None]) -> None:
    ours, _ = written(QuickAckClient, payloads, limits)
    assert ours == written(mqtt.Client, payloads, limits)[0]


def test_a_pass_of_publishes_is_one_send() -> None:
    payloads = [b"%d" % i for i in range(200)]
    _, calls = written(QuickAckClient, payloads, [])
    assert calls == 1
    assert written(mqtt.Client, payloads, [])[1] == 200


def test_what_waits_for_the_socket_is_capped() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client.on_socket_register_write = lambda *args: None
    client.max_inflight_messages_set(0)
    sock = WritableSocket([None] * 100)  # full for a while
    client._sock = sock  # type: ignore[assignment]
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    for _ in range(2000):
        client.publish("t", b"x" * 1000, qos=1)
    client.loop_write()
    assert SEND_CAP <= len(client._unsent) < SEND_CAP + 1100  # the rest stays paho's
    assert client.want_write() and len(client._out_packet) > 1000


def test_a_disconnect_is_written_before_the_socket_closes() -> None:
    client = QuickAckClient(CallbackAPIVersion.VERSION2, client_id="t")
    client.on_socket_register_write = lambda *args: None
    sock = WritableSocket([])
    client._sock = sock  # type: ignore[assignment]
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    client.publish("t", b"last", qos=1)
    client.disconnect()
    client.loop_write()
    assert sock.sent.endswith(b"\xe0\x00")  # DISCONNECT, after the publish
    assert client._sock is None and not client._unsent
