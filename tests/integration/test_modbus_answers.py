"""The Modbus driver against a hostile server over a real socket: every wrong answer is a bad
reading with the reason, counted, logged once, and never stored as good."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from drivers.modbus import ModbusDriver
from drivers.modbus.codec import encode_value
from drivers.modbus.config import ModbusDeviceConfig
from gateway.errors import DecodeError
from gateway.metrics import COUNTERS
from gateway.models import Quality
from tests.hostile_modbus import HostileModbusServer

pytestmark = pytest.mark.integration
DEVICE = "hostile"

# mode -> (error of every tag of the request, gateway_device_errors_total kind)
WRONG_ANSWERS = {
    "fc4_for_fc3": ("answer has function code 4, expected 3", "mismatch"),
    "wrong_unit": ("answer from unit 7, expected unit 1", "mismatch"),
    "wrong_tid": ("no matching answer: answer has transaction id 101, expected 1", "mismatch"),
    "short_byte_count": ("malformed answer: byte count 4, expected 6 (3 registers)",
                         "malformed"),
    "too_many": ("malformed answer: byte count 8, expected 6 (3 registers)", "malformed"),
    "byte_count_lies": ("malformed answer: byte count 250, expected 6 (3 registers)",
                        "malformed"),
    "garbage": ("not a Modbus answer: 90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f a0 a1 "
                "a2 a3 a4 a5 a6 a7", "malformed"),
    "unknown_function": ("answer has function code 65, expected 3", "mismatch"),
    "http": ("not a Modbus answer: 'HTTP/1.1 400 Bad Request'...", "malformed"),
}


@pytest.fixture
async def server() -> AsyncIterator[HostileModbusServer]:
    async with HostileModbusServer() as hostile:
        hostile.registers[0:3] = [*encode_value(220.44, "float32"), 7]
        yield hostile


def driver_for(server: HostileModbusServer, **tag: object) -> ModbusDriver:
    return ModbusDriver(ModbusDeviceConfig.model_validate({
        "name": DEVICE, "driver": "modbus",
        "connection": {"host": "127.0.0.1", "port": server.port, "timeout": "2s"},
        "tags": [{"name": "temperature", "table": "holding", "address": 0, "type": "float32"},
                 {"name": "count", "table": "holding", "address": 2, "type": "uint16", **tag}]}))


@pytest.mark.parametrize("mode", sorted(WRONG_ANSWERS))
async def test_a_wrong_answer_is_a_bad_reading_with_the_reason(
        server: HostileModbusServer, mode: str) -> None:
    reason, kind = WRONG_ANSWERS[mode]
    driver = driver_for(server)
    before = COUNTERS.get("gateway_device_errors_total", device=DEVICE, kind=kind)
    await driver.connect()
    try:
        server.mode = mode
        readings = await driver.read()
        server.mode = "ok"
        recovered = await driver.read()  # the same connection: no reconnect needed
    finally:
        await driver.close()
    assert [(r.tag, r.quality, r.value, r.error) for r in readings] == [
        ("temperature", Quality.BAD, None, reason), ("count", Quality.BAD, None, reason)]
    assert COUNTERS.get("gateway_device_errors_total", device=DEVICE, kind=kind) == before + 1
    assert [(r.quality, r.value) for r in recovered] == [(Quality.GOOD, 220.44),
                                                         (Quality.GOOD, 7)]


async def test_a_wrong_answer_logs_one_line_however_often_it_comes(
        server: HostileModbusServer, caplog: pytest.LogCaptureFixture) -> None:
    driver = driver_for(server)
    await driver.connect()
    caplog.set_level(logging.WARNING, logger="pymodbus")  # as gateway/logs.py sets it
    caplog.set_level(logging.INFO)  # last: it sets the capturing handler's level too
    try:
        for mode in ("unknown_function", "byte_count_lies", "garbage", "wrong_unit", "wrong_tid"):
            server.mode = mode
            caplog.clear()
            for _ in range(3):
                assert all(r.quality == Quality.BAD for r in await driver.read())
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1, (mode, [r.getMessage() for r in warnings])
            assert warnings[0].exc_info is None and "\n" not in warnings[0].getMessage()
            assert WRONG_ANSWERS[mode][0].split(" transaction id")[0] in \
                warnings[0].getMessage()
        server.mode = "ok"
        caplog.clear()
        await driver.read()
        assert [r.getMessage() for r in caplog.records if r.name == "drivers.modbus.driver"] \
            == ["hostile: holding 0..2 (3 regs): temperature, count answered well again"]
    finally:
        await driver.close()


async def test_a_write_whose_answer_echoes_another_address_is_not_taken_as_done(
        server: HostileModbusServer) -> None:
    driver = driver_for(server, writable=True)
    await driver.connect()
    try:
        server.mode = "bad_echo"
        with pytest.raises(DecodeError, match="unclear whether it was written: answer echoes "
                                              "address 3, expected 2"):
            await driver.write("count", 9)
        server.mode = "fc4_for_fc3"  # the write is answered well, its read-back is not
        with pytest.raises(DecodeError, match="written, but reading it back failed: answer "
                                              "has function code 4, expected 3"):
            await driver.write("count", 10)
        server.mode = "ok"
        assert await driver.write("count", 11) == 11
    finally:
        await driver.close()
    assert server.registers[2] == 11
