"""write_at_once on a real pty: the frame is on the other end before the event loop turns."""

from __future__ import annotations

import asyncio
import os
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


async def test_a_frame_is_written_before_the_loop_turns(pty: tuple[int, str]) -> None:
    master, path = pty
    loop = asyncio.get_running_loop()
    transport, _ = await create_serial_connection(loop, asyncio.Protocol, path, 115200, 8,
                                                 "N", 1, 1)
    await asyncio.sleep(0)  # the transport's setup is scheduled, as in pymodbus's connect
    try:
        assert write_at_once(transport)
        transport.write(b"\x01\x03\x00\x00\x00\x02\xc4\x0b")
        assert os.read(master, 64) == b"\x01\x03\x00\x00\x00\x02\xc4\x0b"  # no await between
        assert transport.get_write_buffer_size() == 0
        transport.write(b"one")
        transport.write(b"two")
        assert os.read(master, 64) == b"onetwo"
    finally:
        transport.close()


def test_other_transports_are_left_alone() -> None:
    class Other(asyncio.Transport):
        pass

    other = Other()
    assert not write_at_once(other)
    assert "write" not in vars(other)
