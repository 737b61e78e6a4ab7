"""The raw ceilings of the libraries on this machine, measured in the same run as the gateway so
that the gateway can be reported as a ratio of them (absolute figures drift between machines)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PAYLOAD = b'{"value":21.5,"quality":"good","ts":"2026-11-24T01:02:03.123456Z","unit":"degC"}'


def paho_qos1_ceiling(host: str, port: int, messages: int = 50_000) -> float:
    """Messages per second of a bare paho QoS 1 publish loop, counted to the last PUBACK."""
    acked = threading.Event()
    count = 0
    lock = threading.Lock()

    def on_publish(*_: object) -> None:
        nonlocal count
        with lock:
            count += 1
            if count == messages:
                acked.set()

    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho-ceiling")
    # Unlimited in-flight, as the gateway's sink: paho's window costs a scan of every
    # outstanding message per PUBACK (a third of the throughput at 1,000).
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect(host, port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("paho could not connect")
        started = time.perf_counter()
        for i in range(messages):
            # paho silently loses QoS 1 messages past 65,535 outstanding (measured here: 66,535
            # of 100,000 acknowledged): keep a window, as the gateway's sink does.
            while i - count > 20_000:
                time.sleep(0.001)
            client.publish(f"bench/ceiling/{i % 100}", PAYLOAD, qos=1)
        if not acked.wait(300):
            raise RuntimeError(f"only {count} of {messages} acknowledged")
        return messages / (time.perf_counter() - started)
    finally:
        client.disconnect()
        client.loop_stop()


def pymodbus_read_ceiling(host: str, port: int, device_id: int = 1, seconds: float = 5.0,
                          count: int = 125) -> float:
    """Requests per second of a bare pymodbus loop reading `count` holding registers."""
    from pymodbus.client import ModbusTcpClient

    client = ModbusTcpClient(host, port=port, timeout=2, retries=0)
    if not client.connect():
        raise RuntimeError("pymodbus could not connect")
    try:
        requests = 0
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            answer = client.read_holding_registers(0, count=count, device_id=device_id)
            if answer.isError():
                raise RuntimeError(f"read failed: {answer}")
            requests += 1
        return requests / (time.perf_counter() - started)
    finally:
        client.close()


def asyncua_notification_ceiling(endpoint: str, namespace: str, names: list[str],
                                 seconds: float = 5.0, publishing_ms: float = 100.0) -> float:
    """Data-change notifications per second that a bare asyncua client receives from a
    subscription to the string node ids `names` of `namespace` (what the source emits, as far
    as OPC UA delivers it)."""
    import asyncio

    from asyncua import Client, ua

    class Counter:
        count = 0

        def datachange_notification(self, *_: object) -> None:
            self.count += 1

    async def run() -> float:
        counter = Counter()
        async with Client(endpoint) as client:
            idx = await client.get_namespace_index(namespace)
            nodes = [client.get_node(ua.NodeId(ua.String(name), ua.Int16(idx))) for name in names]
            sub = await client.create_subscription(publishing_ms, counter)
            await sub.subscribe_data_change(nodes, queuesize=10,
                                            sampling_interval=ua.Double(0))
            await asyncio.sleep(2.0)  # the initial values and the first cycles
            start_count, started = counter.count, time.perf_counter()
            await asyncio.sleep(seconds)
            rate = (counter.count - start_count) / (time.perf_counter() - started)
            await sub.delete()
            return rate

    return asyncio.run(run())
