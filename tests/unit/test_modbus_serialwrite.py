"""write_at_once on a real pty: the frame is on the other end before the event loop turns."""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Iterator

import pytest
from pymodbus.transport.serialtransport import create_serial_connection

from drivers.modbus.serialwrite import write_at_once


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def read_blocking(master: int, size: int, timeout: float = 10.0) -> bytes:
    """`size` bytes from the pty's master, waiting in this thread: the event loop does not turn
    meanwhile. (The kernel hands a pty's bytes to the other side in a worker of its own, so
    they need not be readable the instant write() returns, only without the loop's help.)"""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size and (left := deadline - time.monotonic()) > 0:
        if select.select([master], [], [], left)[0]:
            data += os.read(master, size - len(data))
    return data


async def test_a_frame_is_written_before_the_loop_turns(pty: tuple[int, str]) -> None:
    master, path = pty
    loop = asyncio.get_running_loop()
    transport, _ = await create_serial_connection(loop, asyncio.Protocol, path, 115200, 8,
                                                 "N", 1, 1)
    await asyncio.sleep(0)  # the transport's setup is scheduled, as in pymodbus's connect
    try:
        assert write_at_once(transport)
        transport.write(b"\x01\x03\x00\x00\x00\x02\xc4\x0b")
        assert transport.get_write_buffer_size() == 0  # written, not queued for the loop
        assert read_blocking(master, 8) == b"\x01\x03\x00\x00\x00\x02\xc4\x0b"  # no await
        transport.write(b"one")
        transport.write(b"two")
        assert read_blocking(master, 6) == b"onetwo"
    finally:
        transport.close()


def test_other_transports_are_left_alone() -> None:
    class Other(asyncio.Transport):
        pass

    other = Other()
    assert not write_at_once(other)
    assert "write" not in vars(other)
