"""A client that vanishes from the embedded broker (a closed laptop, a killed mosquitto_sub) is
not an error: asyncio's `socket.send() raised exception.` (one per write to the dead
connection, 30 in 1 ms when amqtt's queued publish tasks each write once more) is kept quiet
while the broker runs."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

import pytest

from gateway.broker import EmbeddedBroker

pytestmark = pytest.mark.integration
NOISE = "socket.send() raised exception"


async def write_to_a_reset_connection(writes: int) -> None:
    """What the broker does to a vanished client: a real TCP connection the peer has reset,
    then `writes` writes to it through asyncio's transport (as amqtt's StreamWriter does)."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_client(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, client = await asyncio.open_connection("127.0.0.1", port)
        writer = await asyncio.wait_for(accepted.get(), 10)
        client.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: the peer is gone
        deadline = time.monotonic() + 10
        while not writer.transport.is_closing():  # the first failed send marks it lost
            assert time.monotonic() < deadline, "the reset was not noticed"
            writer.write(b"x" * 1024)
            await asyncio.sleep(0.01)
        for _ in range(writes):
            writer.write(b"publish")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_writes_to_a_vanished_client_log_nothing_while_the_broker_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        async with EmbeddedBroker(port=0):
            await write_to_a_reset_connection(30)
        quiet = [r for r in caplog.records if NOISE in r.getMessage()]
        caplog.clear()
        await write_to_a_reset_connection(30)  # broker stopped: asyncio says it as always
        after = [r for r in caplog.records if NOISE in r.getMessage()]
    assert quiet == []
    assert after, "the test did not provoke the warning it guards against"
