"""The Modbus driver against the simulator over real sockets (TCP) and a pty pair (RTU)."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from typing import Any

import pytest

from drivers.modbus import ModbusDriver
from drivers.modbus.codec import encode_value, register_count
from drivers.modbus.config import ModbusDeviceConfig
from gateway.errors import DeviceUnreachable
from gateway.metrics import COUNTERS
from gateway.models import Quality, Reading
from simulators.modbus import ModbusSimulator, register_map

pytestmark = pytest.mark.integration


def machine(unit_id: int) -> dict[str, Any]:
    return next(m for m in register_map() if m["unit_id"] == unit_id)


def driver_for(unit_id: int, connection: dict[str, Any], **settings: Any) -> ModbusDriver:
    entry = machine(unit_id)
    config = ModbusDeviceConfig.model_validate({
        "name": entry["name"], "driver": "modbus", "poll_interval": "1s",
        "connection": {"unit_id": unit_id, "timeout": "500ms", **connection},
        "tags": entry["tags"], **settings})
    return ModbusDriver(config)


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float):
        return isinstance(actual, float) and math.isclose(actual, expected, rel_tol=1e-6)
    return bool(actual == expected) and type(actual) is type(expected)


def by_tag(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


@pytest.mark.parametrize("unit_id", [1, 2, 3])
async def test_every_tag_decodes_to_the_simulators_value(modbus_simulator: ModbusSimulator,
                                                         unit_id: int) -> None:
    driver = driver_for(unit_id, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        readings = by_tag(await driver.read())
    finally:
        await driver.close()
    assert set(readings) == {t["name"] for t in machine(unit_id)["tags"]}
    for name, reading in readings.items():
        assert reading.quality == Quality.GOOD, (name, reading.error)
        if name != "poll_sequence":
            expected = modbus_simulator.value_of(unit_id, name)
            assert same(reading.value, expected), (name, reading.value, expected)


def test_the_simulated_machines_cover_every_type_and_order() -> None:
    tags = [t for m in register_map() for t in m["tags"]]
    assert {t["type"] for t in tags} == {"bool", "int16", "uint16", "int32", "uint32", "int64",
                                         "uint64", "float32", "float64", "string"}
    wide = [t for t in tags if t["type"] in ("int32", "uint32", "int64", "uint64", "float32",
                                             "float64")]
    orders = {(t.get("byte_order", "big"), t.get("word_order", "big")) for t in wide}
    assert orders == {("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")}
    assert {(t["table"]) for t in tags} == {"holding", "input", "coil", "discrete"}
    assert any(t.get("bit") is not None for t in tags)


async def test_requests_per_poll_equal_the_plan(modbus_simulator: ModbusSimulator) -> None:
    for unit_id in (1, 2, 3):
        driver = driver_for(unit_id, {"host": "127.0.0.1", "port": modbus_simulator.port})
        await driver.connect()
        modbus_simulator.reset_counts()
        for _ in range(3):
            await driver.read()
        await driver.close()
        assert modbus_simulator.request_count(unit_id) == 3 * len(driver.plan.requests)
    # One request per table that has tags, here: at most four per machine for 10-11 tags.
    assert len(driver.plan.requests) <= 4


async def test_exception_answer_becomes_bad_readings_with_the_reason(
        modbus_simulator: ModbusSimulator) -> None:
    driver = driver_for(1, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        modbus_simulator.set_fault(1, "exception", code=2)
        readings = await driver.read()
        modbus_simulator.set_fault(1, "none")
        recovered = await driver.read()
    finally:
        await driver.close()
    assert len(readings) == len(driver.tags)
    assert all(r.quality == Quality.BAD for r in readings)
    assert readings[0].error == "modbus exception 2 (illegal data address)"
    assert all(r.quality == Quality.GOOD for r in recovered)


async def test_short_answer_becomes_bad_readings(modbus_simulator: ModbusSimulator) -> None:
    driver = driver_for(2, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        modbus_simulator.set_fault(2, "short")
        readings = await driver.read()
    finally:
        await driver.close()
    assert all(r.quality == Quality.BAD for r in readings)
    assert "malformed answer" in (readings[0].error or "")


async def test_server_not_running_fails_connect_quickly() -> None:
    simulator = ModbusSimulator(port=0)  # never started: nothing listens on its port
    driver = driver_for(1, {"host": "127.0.0.1", "port": simulator.port})
    started = time.monotonic()
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        await driver.connect()
    assert time.monotonic() - started < 2
    await driver.close()


# A silent device costs one timeout (500ms here); a closed connection is noticed at once.
@pytest.mark.parametrize(("fault", "within"), [("silent", 1.5), ("drop", 0.3)])
async def test_device_that_stops_answering_raises_unreachable_within_the_timeout(
        modbus_simulator: ModbusSimulator, fault: str, within: float) -> None:
    driver = driver_for(1, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        modbus_simulator.set_fault(1, fault)
        started = time.monotonic()
        with pytest.raises(DeviceUnreachable):
            await asyncio.wait_for(driver.read(), 5)
        assert time.monotonic() - started < within
    finally:
        await driver.close()


async def test_rtu_over_a_serial_line(rtu_pty_pair: tuple[str, str]) -> None:
    gateway_end, plc_end = rtu_pty_pair
    simulator = ModbusSimulator(seed=3, serial_port=plc_end, baudrate=19200)
    simulator.freeze(True)
    async with simulator:
        driver = driver_for(3, {"serial": gateway_end, "baudrate": 19200, "timeout": "1s"})
        await driver.connect()
        try:
            readings = by_tag(await driver.read())
        finally:
            await driver.close()
    assert all(r.quality == Quality.GOOD for r in readings.values())
    for name in ("good_count", "speed", "energy_meter", "operating_seconds", "jam_sensor"):
        assert same(readings[name].value, simulator.value_of(3, name)), name


async def test_slow_answer_within_the_timeout_is_good_beyond_it_is_unreachable(
        modbus_simulator: ModbusSimulator) -> None:
    driver = driver_for(3, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        modbus_simulator.set_fault(3, "delay", seconds=0.1)
        assert all(r.quality == Quality.GOOD for r in await driver.read())
        modbus_simulator.set_fault(3, "delay", seconds=1.0)
        with pytest.raises(DeviceUnreachable):
            await driver.read()
    finally:
        await driver.close()


def test_check_plan_prints_each_devices_requests() -> None:
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "config" / "modbus-demo.yaml"
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config),
                             "--plan"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3 device(s), 38 tag(s)" in result.stdout  # 3 setpoints among them
    assert "press-01 (tcp 127.0.0.1:5020, unit 1): 13 tags in 3 request(s) per poll" in \
        result.stdout
    assert "  holding 0..14 (15 regs): status_word, running" in result.stdout


# Registers 100..255 of every simulated unit are free of the machine models (frozen by the
# fixture), so tests can write their own layouts there.
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
WIDE_VALUES = {"int32": -123456, "uint32": 3_000_000_000, "float32": -0.15625,
               "int64": -(2**40) - 7, "uint64": 2**63 + 5, "float64": -1234.5678}


def typed_layout() -> list[tuple[dict[str, Any], Any]]:
    """(tag, value) for every type in every order that applies, packed from address 100."""
    layout: list[tuple[dict[str, Any], Any]] = []
    cases: list[tuple[str, str, str, Any, int | None]] = [
        (t, b, w, v, None) for t, v in WIDE_VALUES.items() for b, w in ORDERS]
    cases += [("int16", b, "big", -300, None) for b in ("big", "little")]
    cases += [("uint16", b, "big", 65000, None) for b in ("big", "little")]
    cases += [("string", b, "big", "AB-7x", 4) for b in ("big", "little")]
    address = 100
    for data_type, byte_order, word_order, value, length in cases:
        tag = {"name": f"{data_type}_{byte_order}_{word_order}", "table": "holding",
               "address": address, "type": data_type, "byte_order": byte_order,
               "word_order": word_order, **({"length": length} if length else {})}
        layout.append((tag, value))
        address += register_count(data_type, length)  # type: ignore[arg-type]
    return layout


def custom_driver(port: int, tags: list[dict[str, Any]], **settings: Any) -> ModbusDriver:
    return ModbusDriver(ModbusDeviceConfig.model_validate({
        "name": "custom", "driver": "modbus",
        "connection": {"host": "127.0.0.1", "port": port, "unit_id": 1, "timeout": "500ms"},
        "tags": tags, **settings}))


async def test_every_type_and_order_written_with_the_codec_reads_back(
        modbus_simulator: ModbusSimulator) -> None:
    layout = typed_layout()
    for tag, value in layout:
        modbus_simulator.write_registers(1, "holding", tag["address"], encode_value(
            value, tag["type"], tag["byte_order"], tag["word_order"], length=tag.get("length")))
    bits = [{"name": f"bit{b}", "table": "holding", "address": 250, "type": "bool", "bit": b}
            for b in (0, 3, 15)]
    modbus_simulator.write_registers(1, "holding", 250, [0b1000_0000_0000_1000])
    driver = custom_driver(modbus_simulator.port, [t for t, _ in layout] + bits)
    await driver.connect()
    try:
        modbus_simulator.reset_counts()
        readings = by_tag(await driver.read())
    finally:
        await driver.close()
    assert modbus_simulator.request_count(1) == len(driver.plan.requests) == 2
    for tag, value in layout:
        reading = readings[tag["name"]]
        assert reading.quality == Quality.GOOD, (tag["name"], reading.error)
        expected = float(struct.unpack(">f", struct.pack(">f", value))[0]) \
            if tag["type"] == "float32" else value
        assert same(reading.value, expected), (tag["name"], reading.value, expected)
    assert [readings[f"bit{b}"].value for b in (0, 3, 15)] == [False, True, True]


async def test_scale_offset_and_unit_reach_the_reading(modbus_simulator: ModbusSimulator) -> None:
    modbus_simulator.write_registers(1, "input", 100, encode_value(-215, "int16"))
    driver = custom_driver(modbus_simulator.port, [
        {"name": "temp", "table": "input", "address": 100, "type": "int16", "scale": 0.1,
         "offset": 1.5, "unit": "degC"}])
    await driver.connect()
    try:
        [reading] = await driver.read()
    finally:
        await driver.close()
    assert reading.value == pytest.approx(-20.0) and reading.unit == "degC"
    assert reading.source_ts.tzinfo is not None


async def test_nan_from_the_plc_is_a_bad_reading(modbus_simulator: ModbusSimulator) -> None:
    modbus_simulator.write_registers(1, "holding", 100, encode_value(math.nan, "float32"))
    modbus_simulator.write_registers(1, "holding", 102, encode_value(math.inf, "float32"))
    driver = custom_driver(modbus_simulator.port, [
        {"name": "nan", "table": "holding", "address": 100, "type": "float32"},
        {"name": "inf", "table": "holding", "address": 102, "type": "float32"}])
    before = COUNTERS.get("gateway_device_errors_total", device="custom", kind="decode")
    await driver.connect()
    try:
        readings = by_tag(await driver.read())
    finally:
        await driver.close()
    assert readings["nan"].quality == Quality.BAD and readings["nan"].value is None
    assert readings["nan"].error == "not a number (nan)"
    assert readings["inf"].quality == Quality.BAD
    assert COUNTERS.get("gateway_device_errors_total", device="custom", kind="decode") == \
        before + 2


async def test_exception_on_one_request_leaves_the_other_requests_good(
        modbus_simulator: ModbusSimulator) -> None:
    # The simulator's tables end at 256: a float32 at 255 makes a real "illegal data address".
    tags = [{"name": "ok_a", "table": "holding", "address": 100, "type": "uint16"},
            {"name": "beyond", "table": "holding", "address": 255, "type": "float32",
             "unit": "bar"},
            {"name": "ok_b", "table": "input", "address": 100, "type": "uint16"}]
    modbus_simulator.write_registers(1, "holding", 100, [7])
    modbus_simulator.write_registers(1, "input", 100, [8])
    driver = custom_driver(modbus_simulator.port, tags)
    before = COUNTERS.get("gateway_device_errors_total", device="custom", kind="exception")
    requests = COUNTERS.get("gateway_modbus_requests_total", device="custom")
    await driver.connect()
    try:
        readings = by_tag(await driver.read())
    finally:
        await driver.close()
    assert len(driver.plan.requests) == 3
    assert (readings["ok_a"].value, readings["ok_b"].value) == (7, 8)
    assert readings["ok_a"].quality == readings["ok_b"].quality == Quality.GOOD
    bad = readings["beyond"]
    assert (bad.quality, bad.value, bad.unit) == (Quality.BAD, None, "bar")
    assert bad.error == "modbus exception 2 (illegal data address)"
    assert COUNTERS.get("gateway_device_errors_total", device="custom",
                        kind="exception") == before + 1
    assert COUNTERS.get("gateway_modbus_requests_total", device="custom") == requests + 3


async def test_read_after_unreachable_and_reconnect_is_good_again(
        modbus_simulator: ModbusSimulator) -> None:
    """The runtime's cycle: read fails, close, connect again, read succeeds."""
    driver = driver_for(1, {"host": "127.0.0.1", "port": modbus_simulator.port})
    await driver.connect()
    try:
        modbus_simulator.set_fault(1, "drop")
        with pytest.raises(DeviceUnreachable):
            await asyncio.wait_for(driver.read(), 5)
        await driver.close()
        with pytest.raises(DeviceUnreachable, match="not connected"):
            await driver.read()
        modbus_simulator.set_fault(1, "none")
        await driver.connect()
        assert all(r.quality == Quality.GOOD for r in await driver.read())
    finally:
        await driver.close()
        await driver.close()  # closing twice is harmless
