"""Micro-bench: what reading one QoS 1 PUBACK costs, paho's own path against the gateway's
client (gateway/sinks/mqtt_client.py), in one run.

`python -m bench.mqtt_acks [--acks N] [--repeats R]`: N PUBACKs for N outstanding messages,
read by `loop_read` from a socket stand-in that hands out what is asked of it (as a socket with
everything arrived does), no in-flight window (as the sink sets it); best of R, microseconds a
PUBACK, for:
- paho: `mqtt.Client`;
- quick acks: the read-ahead and the 3.1.1 fast path of `_handle_pubackcomp`, each PUBACK still
  through paho's `_packet_read`;
- quick acks + runs: the client as the sink uses it, runs of PUBACKs taken in one loop.
"""

from __future__ import annotations

import argparse
import struct
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.sinks.mqtt_client import QuickAckClient


class ArrivedSocket:
    """Everything has arrived: each `recv` returns up to what is asked."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def recv(self, size: int) -> bytes:
        if self.at >= len(self.data):
            raise BlockingIOError
        chunk = self.data[self.at:self.at + size]
        self.at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class AckPerPacket(QuickAckClient):
    """The quick client without its runs: every PUBACK through paho's `_packet_read`."""

    def _packet_read(self) -> MQTTErrorCode:
        return mqtt.Client._packet_read(self)


def us_per_ack(client_type: type[mqtt.Client], acks: int) -> float:
    client = client_type(CallbackAPIVersion.VERSION2, client_id="bench")
    client.max_inflight_messages_set(0)
    client.on_publish = lambda *args: None
    for mid in range(1, acks + 1):
        message = mqtt.MQTTMessage(mid=mid)
        message.qos = 1
        client._out_messages[mid] = message
    stream = b"".join(b"\x40\x02" + struct.pack("!H", mid) for mid in range(1, acks + 1))
    sock: Any = ArrivedSocket(stream)
    client._sock = sock
    started = time.perf_counter()
    while client._out_messages:
        client.loop_read()
    return (time.perf_counter() - started) / acks * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_acks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--acks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    for name, client_type in (("paho", mqtt.Client), ("quick acks", AckPerPacket),
                              ("quick acks + runs", QuickAckClient)):
        best = min(us_per_ack(client_type, args.acks) for _ in range(args.repeats))
        print(f"{name:18} {best:6.2f} us a PUBACK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
