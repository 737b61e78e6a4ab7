"""The Modbus simulator over real sockets and a real serial line, seen by a plain pymodbus client:
values, counters and every fault switch."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from simulators.modbus import ModbusSimulator, register_map

pytestmark = pytest.mark.integration
FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "uint64": "Q", "float32": "f", "float64": "d"}
CLIENT_TIMEOUT = 2.0
"""Seconds: a busy machine may stall the in-process simulator for a while."""
READ = {"holding": "read_holding_registers", "input": "read_input_registers",
        "coil": "read_coils", "discrete": "read_discrete_inputs"}


@pytest.fixture
async def client(modbus_simulator: ModbusSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=modbus_simulator.port, timeout=CLIENT_TIMEOUT,
                                  retries=0)
    assert await client.connect()
    yield client
    client.close()


def decode(tag: dict[str, Any], registers: list[int]) -> Any:
    """A third, deliberately naive decoder: undo the byte and word swaps, then struct."""
    words = [r.to_bytes(2, "big") for r in registers]
    if tag.get("byte_order", "big") == "little":
        words = [w[::-1] for w in words]
    if tag["type"] == "string":
        return b"".join(words).rstrip(b"\0 ").decode("ascii")
    if tag["type"] == "bool":
        return bool(registers[0] >> tag["bit"] & 1)
    if tag.get("word_order", "big") == "little":
        words.reverse()
    value = struct.unpack(">" + FORMATS[tag["type"]], b"".join(words))[0]
    return value * tag["scale"] if "scale" in tag else value


def width(tag: dict[str, Any]) -> int:
    if tag["type"] == "string":
        return int(tag["length"])
    return struct.calcsize(FORMATS.get(tag["type"], "H")) // 2


async def read_tag(client: AsyncModbusTcpClient | AsyncModbusSerialClient, unit_id: int,
                   tag: dict[str, Any]) -> Any:
    answer = await getattr(client, READ[tag["table"]])(
        tag["address"], count=1 if tag["table"] in ("coil", "discrete") else width(tag),
        device_id=unit_id)
    assert not answer.isError(), (tag, answer)
    if tag["table"] in ("coil", "discrete"):
        return answer.bits[0]
    return decode(tag, answer.registers)


def same(got: Any, expected: Any) -> bool:
    if isinstance(expected, float):
        return bool(got == pytest.approx(expected, rel=1e-6, abs=1e-9))
    return bool(got == expected)


async def test_every_tag_read_over_tcp_is_the_models_value(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    for machine in register_map():
        for tag in machine["tags"]:
            if tag["name"] == "poll_sequence":
                continue
            got = await read_tag(client, machine["unit_id"], tag)
            expected = modbus_simulator.value_of(machine["unit_id"], tag["name"])
            assert same(got, expected), (machine["name"], tag["name"], got, expected)


async def test_rtu_over_a_pty_pair_answers_like_tcp(rtu_pty_pair: tuple[str, str]) -> None:
    client_end, server_end = rtu_pty_pair
    async with ModbusSimulator(serial_port=server_end, seed=3, baudrate=38400) as simulator:
        simulator.freeze(True)
        client = AsyncModbusSerialClient(client_end, baudrate=38400, timeout=1, retries=1)
        assert await client.connect()
        try:
            for machine in register_map()[1:]:
                for tag in machine["tags"]:
                    got = await read_tag(client, machine["unit_id"], tag)
                    expected = simulator.value_of(machine["unit_id"], tag["name"])
                    assert same(got, expected), (tag["name"], got, expected)
        finally:
            client.close()


async def test_test_writes_and_client_writes_meet_in_the_same_tables(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.write_registers(2, "holding", 100, [0x1234, 0xFFFF])
    modbus_simulator.write_registers(3, "discrete", 10, [True, False, True])
    assert (await client.read_holding_registers(100, count=2, device_id=2)).registers == [
        0x1234, 0xFFFF]
    assert (await client.read_discrete_inputs(10, count=3, device_id=3)).bits[:3] == [
        True, False, True]
    assert not (await client.write_registers(110, [7, 8, 9], device_id=1)).isError()
    assert not (await client.write_coils(20, [True, True], device_id=3)).isError()
    assert modbus_simulator.read_registers(1, "holding", 110, 3) == [7, 8, 9]
    assert modbus_simulator.read_registers(3, "coil", 20, 2) == [True, True]
    assert modbus_simulator.read_registers(2, "holding", 110, 3) == [0, 0, 0]


async def test_poll_sequence_counts_every_read_that_covers_it(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    seen = []
    for _ in range(5):
        answer = await client.read_input_registers(18, count=4, device_id=1)
        seen.append(answer.registers[2] << 16 | answer.registers[3])
    await client.read_input_registers(0, count=2, device_id=1)  # does not cover it
    assert seen == [1, 2, 3, 4, 5]
    assert modbus_simulator.value_of(1, "poll_sequence") == 5


async def test_request_count_counts_each_units_requests_until_reset(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    for _ in range(3):
        await client.read_holding_registers(0, count=10, device_id=2)
    await client.read_coils(0, count=2, device_id=3)
    assert [modbus_simulator.request_count(u) for u in (1, 2, 3)] == [0, 3, 1]
    modbus_simulator.reset_counts()
    assert modbus_simulator.request_count(2) == 0


async def test_models_move_only_while_not_frozen(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    async def oil() -> list[int]:
        return list((await client.read_holding_registers(10, count=2, device_id=1)).registers)

    first = await oil()
    await asyncio.sleep(0.35)
    assert await oil() == first
    modbus_simulator.freeze(False)
    deadline = time.monotonic() + 3
    while await oil() == first:
        assert time.monotonic() < deadline, "the oil temperature never moved"
        await asyncio.sleep(0.05)


async def test_silent_unit_times_out_while_others_answer(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.set_fault(1, "silent")
    started = time.monotonic()
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=1, device_id=1)
    assert time.monotonic() - started >= CLIENT_TIMEOUT - 0.05
    assert modbus_simulator.request_count(1) == 1
    other = AsyncModbusTcpClient("127.0.0.1", port=modbus_simulator.port, timeout=1, retries=0)
    assert await other.connect()
    try:
        assert not (await other.read_holding_registers(0, count=1, device_id=2)).isError()
        modbus_simulator.set_fault(1, "none")
        assert not (await other.read_holding_registers(0, count=1, device_id=1)).isError()
    finally:
        other.close()


async def test_exception_fault_answers_every_request_with_its_code(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.set_fault(2, "exception", code=2)
    holding = await client.read_holding_registers(0, count=2, device_id=2)
    coils = await client.read_input_registers(0, count=1, device_id=2)
    assert (holding.exception_code, coils.exception_code) == (2, 2)
    assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
    with pytest.raises(ValueError, match="not a valid"):
        modbus_simulator.set_fault(2, "exception", code=99)


async def test_fault_for_all_units_yields_to_a_units_own_setting(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.set_fault(None, "exception", code=4)
    modbus_simulator.set_fault(3, "none")
    codes = [(await client.read_holding_registers(0, count=1, device_id=u)).exception_code
             for u in (1, 2, 3)]
    assert codes == [4, 4, 0]
    modbus_simulator.set_fault(None, "none")
    assert not (await client.read_holding_registers(0, count=1, device_id=1)).isError()


async def test_drop_closes_the_connection_of_the_request(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    bystander = AsyncModbusTcpClient("127.0.0.1", port=modbus_simulator.port, timeout=1,
                                     retries=0, reconnect_delay=0)
    assert await bystander.connect()
    modbus_simulator.set_fault(1, "drop")
    try:
        with pytest.raises((ConnectionException, ModbusIOException)):
            await client.read_holding_registers(0, count=1, device_id=1)
        # Only the requesting connection went: another client of another unit carries on.
        assert not (await bystander.read_holding_registers(0, count=1, device_id=2)).isError()
        modbus_simulator.set_fault(1, "none")
        again = AsyncModbusTcpClient("127.0.0.1", port=modbus_simulator.port, timeout=1,
                                     retries=0)
        assert await again.connect()
        assert not (await again.read_holding_registers(0, count=1, device_id=1)).isError()
        again.close()
    finally:
        bystander.close()


async def test_short_fault_answers_fewer_values_than_asked(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.set_fault(2, "short")
    answer = await client.read_holding_registers(20, count=8, device_id=2)
    assert not answer.isError()
    assert len(answer.registers) == 7
    bits = await client.read_coils(0, count=16, device_id=2)
    assert len(bits.bits) == 8  # one byte of bits instead of two


async def test_delay_fault_answers_late(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    modbus_simulator.set_fault(3, "delay", seconds=0.3)
    started = time.monotonic()
    answer = await client.read_holding_registers(0, count=2, device_id=3)
    assert not answer.isError()
    assert 0.3 <= time.monotonic() - started < CLIENT_TIMEOUT  # late, yet answered


async def test_delayed_answer_keeps_its_own_transaction_id(
        modbus_simulator: ModbusSimulator) -> None:
    """pymodbus 3.16's handler labels a late answer with the id of the request that arrived
    meanwhile; the simulator's handler must not (raw MBAP frames, so no client hides it)."""
    modbus_simulator.set_fault(1, "delay", seconds=0.3)
    modbus_simulator.write_registers(1, "holding", 100, [111])
    modbus_simulator.write_registers(2, "holding", 100, [222])
    reader, writer = await asyncio.open_connection("127.0.0.1", modbus_simulator.port)
    try:
        for tid, unit in ((7, 1), (8, 2)):
            writer.write(struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, 100, 1))
            await writer.drain()
            await asyncio.sleep(0.05)
        answers = {}
        for _ in range(2):
            frame = await asyncio.wait_for(reader.readexactly(11), 10)
            tid, _, _, unit, function, _, value = struct.unpack(">HHHBBBH", frame)
            answers[tid] = (unit, function, value)
    finally:
        writer.close()
    assert answers == {7: (1, 3, 111), 8: (2, 3, 222)}


async def test_stop_does_not_wait_for_a_silent_or_delayed_answer() -> None:
    simulator = ModbusSimulator(port=0)
    await simulator.start()
    simulator.set_fault(1, "delay", seconds=30)
    client = AsyncModbusTcpClient("127.0.0.1", port=simulator.port, timeout=0.2, retries=0)
    assert await client.connect()
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(0, count=1, device_id=1)
    client.close()
    started = time.monotonic()
    await simulator.stop()
    assert time.monotonic() - started < 10  # not the 30 s of the delayed answer


def test_cli_lists_the_register_map() -> None:
    out = subprocess.run([sys.executable, "-m", "simulators", "--list"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert "press-01" in out and "packer-03" in out and "word_order: little" in out


async def test_a_client_write_to_the_stroke_setpoint_changes_the_press_stroke_rate(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    running_at = next(t for t in range(0, 3600, 5) if _running_at(modbus_simulator, float(t)))
    modbus_simulator.set_time(float(running_at))
    assert (await client.read_input_registers(1, count=1, device_id=1)).registers == [27]
    assert (await client.read_holding_registers(14, count=1, device_id=1)).registers == [27]
    assert not (await client.write_register(14, 35, device_id=1)).isError()
    modbus_simulator.set_time(running_at + 0.1)  # the next model step follows the write
    assert (await client.read_input_registers(1, count=1, device_id=1)).registers == [35]
    assert (await client.read_holding_registers(14, count=1, device_id=1)).registers == [35]
    assert modbus_simulator.value_of(1, "strokes_per_minute") == 35


def _running_at(simulator: ModbusSimulator, t: float) -> bool:
    simulator.set_time(t)
    return bool(simulator.value_of(1, "running"))
