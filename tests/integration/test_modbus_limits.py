"""Oversized requests and exception answers on real sockets: the simulator answers exception 3
for a quantity the spec does not allow, the driver shrinks a device's reads when the device
refuses them, and an exception on every poll is logged throttled but counted each time."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.driver import ModbusDriver
from gateway.metrics import COUNTERS
from gateway.models import Quality
from simulators.modbus import ModbusSimulator

pytestmark = pytest.mark.integration
TIMEOUT = 10.0  # generous: the box is shared


async def raw_request(port: int, unit: int, pdu: bytes) -> bytes:
    """One Modbus TCP request as bytes on a socket (pymodbus's client refuses to send an
    oversized one); the answer's PDU."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack(">HHHB", 7, 0, len(pdu) + 1, unit) + pdu)
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(7), TIMEOUT)
        tid, _, length, answered_unit = struct.unpack(">HHHB", header)
        assert (tid, answered_unit) == (7, unit)
        return await asyncio.wait_for(reader.readexactly(length - 1), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()


def read(function: int, address: int, count: int) -> bytes:
    return struct.pack(">BHH", function, address, count)


@pytest.mark.parametrize(("function", "count"), [(3, 126), (4, 200), (1, 2001), (2, 4000),
                                                  (3, 0)])
async def test_an_oversized_read_is_answered_with_exception_3(
        modbus_simulator: ModbusSimulator, function: int, count: int) -> None:
    answer = await raw_request(modbus_simulator.port, 1, read(function, 0, count))
    assert answer == bytes([function | 0x80, 3])


async def test_the_largest_reads_the_spec_allows_are_answered(
        modbus_simulator: ModbusSimulator) -> None:
    registers = await raw_request(modbus_simulator.port, 1, read(3, 0, 125))
    assert registers[:2] == bytes([3, 250])
    bits = await raw_request(modbus_simulator.port, 1, read(1, 0, 200))
    assert bits[:2] == bytes([1, 25])


async def test_an_oversized_write_is_answered_with_exception_3(
        modbus_simulator: ModbusSimulator) -> None:
    coils = struct.pack(">BHHB", 15, 0, 1969, 247) + bytes(247)
    assert await raw_request(modbus_simulator.port, 1, coils) == bytes([15 | 0x80, 3])
    registers = struct.pack(">BHHB", 16, 0, 124, 248 % 256) + bytes(248 % 256)
    assert await raw_request(modbus_simulator.port, 1, registers) == bytes([16 | 0x80, 3])


def grouped_device(port: int, **extra: Any) -> ModbusDeviceConfig:
    """Eight int16 holding tags 0, 10, ..., 70: one read of 71 registers as planned."""
    tags = [{"name": f"t{i}", "table": "holding", "address": 10 * i, "type": "int16"}
            for i in range(8)]
    return ModbusDeviceConfig.model_validate(
        {"name": "meter", "driver": "modbus", "poll_interval": "1s",
         "connection": {"host": "127.0.0.1", "port": port, "unit_id": 1, "timeout": "2s"},
         "tags": tags, **extra})


async def connected(config: ModbusDeviceConfig) -> ModbusDriver:
    driver = ModbusDriver(config)
    await driver.connect()
    return driver


async def test_a_device_that_refuses_a_grouped_read_gets_smaller_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    simulator = ModbusSimulator(port=0, seed=1, max_read_registers=40)
    simulator.freeze(True)
    async with simulator:
        for i in range(8):
            simulator.write_registers(1, "holding", 10 * i, [100 + i])
        driver = await connected(grouped_device(simulator.port))
        try:
            assert [r.count for r in driver.plan.requests] == [71]
            with caplog.at_level(logging.WARNING, logger="drivers.modbus.driver"):
                first = await driver.read()
                second = await driver.read()
        finally:
            await driver.close()
        for readings in (first, second):
            assert all(r.quality == Quality.GOOD for r in readings), readings
            assert {r.tag: r.value for r in readings} == {f"t{i}": 100 + i for i in range(8)}
        assert all(r.count <= 40 for r in driver.plan.requests)
        assert driver.max_registers == 35
        shrunk = [r for r in caplog.records if "exception 3" in r.getMessage()]
        assert len(shrunk) == 1, [r.getMessage() for r in caplog.records]
        assert "at most 35 per request" in shrunk[0].getMessage()
        assert simulator.refused_quantities == 1


async def test_exception_3_to_smaller_reads_too_keeps_the_plan(
        modbus_simulator: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    modbus_simulator.set_fault(1, "exception", code=3)
    driver = await connected(grouped_device(modbus_simulator.port))
    try:
        with caplog.at_level(logging.WARNING, logger="drivers.modbus.driver"):
            await driver.read()
            modbus_simulator.reset_counts()
            readings = await driver.read()
    finally:
        await driver.close()
    assert modbus_simulator.request_count(1) == 1  # the second poll: one read, not split
    assert sum("not about their size" in r.getMessage() for r in caplog.records) == 1
    assert all(r.quality == Quality.BAD for r in readings)
    assert readings[0].error == "modbus exception 3 (illegal data value)"
    assert driver.max_registers == 125  # smaller reads refused too: the size was not the cause
    assert [r.count for r in driver.plan.requests] == [71]


async def test_an_exception_on_every_poll_is_logged_throttled_and_counted_each_time(
        modbus_simulator: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    modbus_simulator.set_fault(1, "exception", code=4)
    driver = await connected(grouped_device(modbus_simulator.port))
    driver.problem_summary_every = 0.5
    before = COUNTERS.get("gateway_device_errors_total", device="meter", kind="exception")
    polls = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with caplog.at_level(logging.WARNING, logger="drivers.modbus.driver"):
            # Poll for at least 1.2 s and 20 polls: two summaries due, at most three.
            while polls < 20 or loop.time() - started < 1.2:
                readings = await driver.read()
                assert all(r.quality == Quality.BAD for r in readings)
                polls += 1
                assert polls < 100_000
            elapsed = loop.time() - started
    finally:
        await driver.close()
    lines = [r.getMessage() for r in caplog.records if "exception 4" in r.getMessage()]
    assert lines[0].startswith("meter: modbus exception 4 (server device failure) reading")
    summaries = lines[1:]
    assert 1 <= len(summaries) <= elapsed / 0.5 + 1, lines
    assert all("more time(s) in the last" in line for line in summaries)
    assert len(lines) < polls
    after = COUNTERS.get("gateway_device_errors_total", device="meter", kind="exception")
    assert after - before == polls
