"""Modbus writes against the simulator over a real socket: the registers written, the value read
back, and every refusal with nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.modbus import ModbusDriver
from drivers.modbus.codec import encode_value
from drivers.modbus.config import ModbusDeviceConfig
from gateway.errors import WriteRefused
from simulators.modbus import ModbusSimulator
from tests.hostile_modbus import HostileModbusServer

pytestmark = pytest.mark.integration
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]

# Holding registers 100..255 of every simulated unit are free of the machine models; the
# status word (holding 0 of unit 1) and the coils of unit 3 are the machines' own.
TAGS: list[dict[str, Any]] = [
    *({"name": f"setpoint_{b}_{w}", "table": "holding", "address": 100 + 2 * i,
       "type": "float32", "byte_order": b, "word_order": w, "writable": True, "min": -500,
       "max": 500} for i, (b, w) in enumerate(ORDERS)),
    {"name": "speed", "table": "holding", "address": 110, "type": "int16", "scale": 0.1,
     "offset": 1.5, "writable": True, "unit": "m/min"},
    {"name": "recipe_no", "table": "holding", "address": 111, "type": "uint16",
     "writable": True, "write_single": True},
    {"name": "batch", "table": "holding", "address": 112, "type": "uint32",
     "word_order": "little", "writable": True},
    {"name": "energy", "table": "holding", "address": 114, "type": "float64",
     "byte_order": "little", "writable": True},
    {"name": "recipe", "table": "holding", "address": 120, "type": "string", "length": 4,
     "writable": True},
    {"name": "read_only", "table": "holding", "address": 130, "type": "uint16"},
    {"name": "beyond", "table": "holding", "address": 255, "type": "uint32",
     "writable": True},
    {"name": "door_open", "table": "holding", "address": 0, "type": "bool", "bit": 3,
     "writable": True},
    {"name": "lamp", "table": "holding", "address": 0, "type": "bool", "bit": 9,
     "byte_order": "little", "writable": True, "write_single": True},
]
COIL_TAGS = [{"name": "motor_on", "table": "coil", "address": 0, "type": "bool",
              "writable": True},
             {"name": "conveyor_running", "table": "coil", "address": 1, "type": "bool"}]


def driver(port: int, unit_id: int, tags: list[dict[str, Any]]) -> ModbusDriver:
    return ModbusDriver(ModbusDeviceConfig.model_validate({
        "name": "writer", "driver": "modbus",
        "connection": {"host": "127.0.0.1", "port": port, "unit_id": unit_id,
                       "timeout": "2s"},
        "tags": tags}))


@pytest.fixture
async def press(modbus_simulator: ModbusSimulator) -> AsyncIterator[ModbusDriver]:
    writer = driver(modbus_simulator.port, 1, TAGS)
    await writer.connect()
    try:
        yield writer
    finally:
        await writer.close()


def registers(sim: ModbusSimulator, address: int, count: int, unit: int = 1) -> list[Any]:
    return sim.read_registers(unit, "holding", address, count)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
async def test_float32_written_in_every_order_reads_back(
        press: ModbusDriver, modbus_simulator: ModbusSimulator, byte_order: str,
        word_order: str) -> None:
    tag = f"setpoint_{byte_order}_{word_order}"
    address = press.tags[tag].address
    assert await press.write(tag, 220.44) == 220.44  # the shortest decimal, read back
    assert registers(modbus_simulator, address, 2) == encode_value(
        220.44, "float32", byte_order, word_order)  # type: ignore[arg-type]
    assert await press.write(tag, -0.15625) == -0.15625


async def test_scaled_int16_is_written_as_the_nearest_raw_step(
        press: ModbusDriver, modbus_simulator: ModbusSimulator) -> None:
    assert await press.write("speed", -20.0) == -20.0
    assert registers(modbus_simulator, 110, 1) == encode_value(-215, "int16")  # (v-1.5)/0.1
    assert await press.write("speed", 22.43) == 22.4  # raw 209.3 -> 209
    assert registers(modbus_simulator, 110, 1) == [209]


async def test_other_types_and_a_string_read_back(press: ModbusDriver,
                                                  modbus_simulator: ModbusSimulator) -> None:
    assert await press.write("recipe_no", 65535) == 65535
    assert await press.write("batch", 3_000_000_000) == 3_000_000_000
    assert registers(modbus_simulator, 112, 2) == encode_value(3_000_000_000, "uint32",
                                                               "big", "little")
    assert await press.write("energy", -1234.5678) == -1234.5678
    assert await press.write("recipe", "AB-7") == "AB-7"
    assert registers(modbus_simulator, 120, 4) == [0x4142, 0x2D37, 0, 0]  # NUL padded


async def test_a_bit_of_the_status_word_leaves_its_other_bits_alone(
        press: ModbusDriver, modbus_simulator: ModbusSimulator) -> None:
    modbus_simulator.write_registers(1, "holding", 0, [0b1010_0000_0110_0001])
    assert await press.write("door_open", True) is True
    assert registers(modbus_simulator, 0, 1) == [0b1010_0000_0110_1001]
    assert await press.write("door_open", False) is False
    assert registers(modbus_simulator, 0, 1) == [0b1010_0000_0110_0001]
    # byte_order little: bit 9 of the byte-swapped word is bit 1 of the register's low byte
    assert await press.write("lamp", True) is True
    assert registers(modbus_simulator, 0, 1) == [0b1010_0000_0110_0011]


async def test_a_coil_is_written_and_read_back(modbus_simulator: ModbusSimulator) -> None:
    packer = driver(modbus_simulator.port, 3, COIL_TAGS)
    await packer.connect()
    try:
        for state in (False, True, False):
            assert await packer.write("motor_on", state) is state
            assert modbus_simulator.read_registers(3, "coil", 0, 1) == [state]
        assert packer.writable_tags() == {"motor_on"}
        with pytest.raises(WriteRefused, match="read-only"):
            await packer.write("conveyor_running", True)
    finally:
        await packer.close()


@pytest.mark.parametrize(("tag", "value", "reason"), [
    ("read_only", 5, "tag read_only is read-only"),
    ("nonexistent", 5, "no tag 'nonexistent' on this device"),
    ("setpoint_big_big", 500.5, "500.5 is above the tag's max 500"),
    ("setpoint_big_big", -501, "-501 is below the tag's min -500"),
    ("setpoint_big_big", "220", "takes a number, not '220'"),
    ("setpoint_big_big", True, "takes a number, not True"),
    ("setpoint_big_big", float("nan"), "takes a finite number, not nan"),
    ("speed", 4000.0, "does not fit int16"),
    ("recipe_no", 2.5, "not a whole number"),
    ("recipe_no", -1, "does not fit uint16"),
    ("recipe", "TOO LONG!", "longer than 8 characters"),
    ("door_open", 1, "takes true or false, not 1"),
    ("beyond", 7, "the PLC refused the write: modbus exception 2 (illegal data address)"),
])
async def test_a_refused_write_writes_nothing(press: ModbusDriver,
                                              modbus_simulator: ModbusSimulator, tag: str,
                                              value: object, reason: str) -> None:
    before = registers(modbus_simulator, 0, 256)
    with pytest.raises(WriteRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        await press.write(tag, value)
    assert registers(modbus_simulator, 0, 256) == before


async def test_a_plc_that_answers_the_write_with_an_exception(
        press: ModbusDriver, modbus_simulator: ModbusSimulator) -> None:
    modbus_simulator.set_fault(1, "exception", code=4)
    with pytest.raises(WriteRefused, match=r"modbus exception 4 \(server device failure\)"):
        await press.write("recipe_no", 3)
    with pytest.raises(WriteRefused, match="cannot read register 0 to change its bit 3"):
        await press.write("door_open", True)
    modbus_simulator.set_fault(1, "none")
    assert await press.write("recipe_no", 3) == 3


async def test_function_6_only_when_write_single_and_one_register() -> None:
    async with HostileModbusServer() as server:
        writer = driver(server.port, 1, [
            {"name": "single", "table": "holding", "address": 0, "type": "int16",
             "writable": True, "write_single": True},
            {"name": "multiple", "table": "holding", "address": 1, "type": "int16",
             "writable": True},
            {"name": "flag", "table": "holding", "address": 2, "type": "bool", "bit": 0,
             "writable": True, "write_single": True}])
        await writer.connect()
        try:
            for name in ("single", "multiple"):
                server.functions.clear()
                assert await writer.write(name, -3) == -3
                assert server.functions == [6 if name == "single" else 16, 3]
            server.functions.clear()
            assert await writer.write("flag", True) is True
            assert server.functions == [3, 6, 3]  # read, modify, write; read back
        finally:
            await writer.close()
    assert server.registers[0:3] == [0xFFFD, 0xFFFD, 1]
