"""paho's client with a cheaper acknowledgement path, for QoS 1 at its ceiling.

Profiled in the saturated per-tag scenario (bench scenario i, py-spy), reading PUBACKs was
46% of the gateway's CPU: paho reads each 4-byte PUBACK in three `recv` calls (its command
byte, its length byte, its message id), and decodes it into a `ReasonCode` and a `Properties`
object that MQTT 3.1.1 has no field for. These overrides of paho's internals remove that
work, and the cost of writing each message on its own, and change nothing else
(tests/unit/test_mqtt_client.py holds them to paho's own path):

- `_sock_recv` reads what the socket has, up to 64 KiB, and hands paho its small reads from
  that chunk; `buffered()` says how much is left, so that the session reads on until it is
  empty (the selector cannot see those bytes).
- `_handle_pubackcomp` takes a 3.1.1 PUBACK's message id with one shift and passes the same
  two shared, empty `ReasonCode`/`Properties` to `on_publish` that paho would build anew.
  MQTT 5 (a PUBACK may carry a reason and properties) and PUBCOMP take paho's own path.
- `_packet_read` takes the 3.1.1 PUBACKs that wait whole at the front of the read-ahead in
  one loop, without paho's per-packet work (three reads, a state dict rebuilt, a dispatch):
  after the first two, still 25% of the gateway's samples in bench scenario h. A packet of
  any other kind, or one cut by the socket, is paho's.
- `_sock_send` collects what paho writes in one `loop_write` (one `send` a message before:
  13% of the CPU in the same profile) and `_packet_write` hands it to the socket at once; what
  the socket does not take waits, `want_write()` stays true until it is gone, and at most
  SEND_CAP bytes wait (past that paho keeps its packets queued, as on a full socket).

All are private methods of paho 2.x (pinned below 3); `paho_internals_present()` is checked
when a client is built, and a paho without them gets plain `mqtt.Client`."""

from __future__ import annotations

from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

RECV_CHUNK = 65536
"""Bytes read from the socket at once: about 16,000 PUBACKs."""
SEND_CAP = 262144
"""Bytes collected for the socket at most (about 2,000 per-tag messages)."""
PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
NO_PROPERTIES = Properties(PacketTypes.PUBACK)


def paho_internals_present() -> bool:
    return all(callable(getattr(mqtt.Client, name, None))
               for name in ("_sock_recv", "_sock_send", "_sock_close", "_packet_write",
                            "_packet_read", "_handle_pubackcomp", "_do_on_publish"))


class QuickAckClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = b""
        self._read_at = 0
        self._unsent = bytearray()

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        return len(self._received) - self._read_at

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_at >= len(self._received):
            chunk = super()._sock_recv(RECV_CHUNK)  # BlockingIOError when there is nothing
            if len(chunk) <= bufsize:
                return chunk  # b"" is the broker closing the connection
            self._received, self._read_at = chunk, 0
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._received))
        return self._received[start:self._read_at]

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if len(self._unsent) >= SEND_CAP and self._flush() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BlockingIOError  # paho keeps the packet queued and tries again when writable
        self._unsent += buf
        return len(buf)

    def _packet_write(self) -> MQTTErrorCode:
        written = super()._packet_write()  # into _unsent, and a DISCONNECT through _sock_close
        flushed = self._flush()
        if flushed == MQTTErrorCode.MQTT_ERR_CONN_LOST:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to send on socket")
            return flushed
        return flushed if written == MQTTErrorCode.MQTT_ERR_SUCCESS else written

    def _flush(self) -> MQTTErrorCode:
        """What waits, to the socket: SUCCESS when it took it all, AGAIN when it is full."""
        while self._unsent:
            if self._sock is None:
                self._unsent.clear()
                break
            try:
                sent = super()._sock_send(self._unsent)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:  # the connection is gone: paho's read or keepalive tells why
                self._unsent.clear()
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            del self._unsent[:sent]
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def want_write(self) -> bool:
        return bool(self._unsent) or super().want_write()

    def _sock_close(self) -> None:
        self._flush()  # a DISCONNECT is written, then the socket closed at once
        self._unsent.clear()
        self._received, self._read_at = b"", 0  # what a closed connection left is not read
        super()._sock_close()

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] != 0 or self._protocol == mqtt.MQTTv5:
            return super()._packet_read()  # within a packet, or acks that may carry more
        data, at = self._received, self._read_at
        end, taken = len(data), at
        while end - at >= 4 and data[at] == 0x40 and data[at + 1] == 2:
            mid = (data[at + 2] << 8) | data[at + 3]
            at += 4
            self._read_at = at
            rc = self._acked(mid)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
            if self._received is not data:
                break  # a callback closed the connection: what it left is not read
        if at == taken:
            return super()._packet_read()
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()  # paho's keepalive clock
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == mqtt.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        return self._acked((packet[0] << 8) | packet[1])

    def _acked(self, mid: int) -> MQTTErrorCode:
        """A 3.1.1 PUBACK, as paho's `_handle_pubackcomp` takes it: `on_publish` once, for a
        message still outstanding."""
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, PUBACK_SUCCESS, NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def new_client(*args: Any, **kwargs: Any) -> mqtt.Client:
    """A `QuickAckClient` where this paho has the internals it overrides, else paho's own."""
    client_type = QuickAckClient if paho_internals_present() else mqtt.Client
    return client_type(*args, **kwargs)
