"""OpcUaDriver.write against the simulator: setpoints written in the node's DataType and read
back; the server's refusal as the reason; a value that does not fit refused before any Write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from gateway.errors import WriteRefused
from simulators.opcua import OpcUaSimulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SPEED = "ns=2;s=Cnc.Setpoints.SpindleSpeed"
OVERRIDE = "ns=2;s=Cnc.Setpoints.SpindleOverride"
COUNTER = "ns=2;s=Cnc.PartCounter"


def make(endpoint: str, mode: str) -> OpcUaDriver:
    return OpcUaDriver(OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": mode, "poll_interval": "100ms",
        "connection": {"endpoint": endpoint, "timeout": "2s"},
        "tags": [
            {"name": "speed_sp", "node": SPEED, "writable": True, "max": 16000},
            {"name": "override", "node": OVERRIDE, "writable": True, "min": 50, "max": 150},
            {"name": "parts", "node": COUNTER, "writable": True},  # the server says no
            {"name": "speed", "node": "ns=2;s=Cnc.SpindleSpeed"},
        ]}))


@pytest.fixture
async def driver(opcua_sim: OpcUaSimulator) -> AsyncIterator[OpcUaDriver]:
    drv = make(opcua_sim.endpoint, "poll")
    await drv.connect()
    yield drv
    await drv.close()


async def server_value(sim: OpcUaSimulator, name: str) -> object:
    return await sim._nodes[name].read_value()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_double_and_an_int32_setpoint_are_written_and_read_back(
        opcua_sim: OpcUaSimulator, mode: str) -> None:
    driver = make(opcua_sim.endpoint, mode)
    await driver.connect()
    try:
        await written_and_read_back(driver, opcua_sim)
    finally:
        await driver.close()


async def written_and_read_back(driver: OpcUaDriver, opcua_sim: OpcUaSimulator) -> None:
    assert driver.writable_tags() == {"speed_sp", "override", "parts"}
    assert await driver.write("speed_sp", 9000.5) == 9000.5
    assert await driver.write("override", 120.0) == 120  # a whole float fits an Int32
    assert await server_value(opcua_sim, "Cnc.Setpoints.SpindleSpeed") == 9000.5
    assert await server_value(opcua_sim, "Cnc.Setpoints.SpindleOverride") == 120
    assert opcua_sim.written == [SPEED, OVERRIDE]


async def test_the_machine_follows_a_written_setpoint(
        driver: OpcUaDriver, opcua_sim: OpcUaSimulator) -> None:
    await driver.write("speed_sp", 3000)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not (opcua_sim.machine.state == "RUNNING"
               and abs(opcua_sim.machine.spindle_speed - 3000) <= 50):
        assert loop.time() < deadline, "the spindle never followed the setpoint"
        await asyncio.sleep(0.05)


async def test_a_read_only_node_is_refused_with_the_servers_status(
        driver: OpcUaDriver, opcua_sim: OpcUaSimulator) -> None:
    opcua_sim.freeze(True)  # the counter stands still
    before = await server_value(opcua_sim, "Cnc.PartCounter")
    with pytest.raises(WriteRefused, match=r"the server refused the write \(BadUserAccessDenied\)"):
        await driver.write("parts", 123456)
    assert opcua_sim.written == [COUNTER]  # sent, and refused by the server
    assert await server_value(opcua_sim, "Cnc.PartCounter") == before


REFUSALS = [
    ("speed_sp", "fast", "a string cannot be written to a Double node"),
    ("speed_sp", True, "a boolean cannot be written to a Double node"),
    ("speed_sp", 17000, "17000.0 is above the tag's max 16000.0"),
    ("override", 12.5, "12.5 is not a whole number (the node is Int32)"),
    ("override", 40, "40 is below the tag's min 50.0"),
    ("override", 2**31, "2147483648 is outside the range of Int32"),
    ("speed", 1.0, "speed is not writable"),
    ("nope", 1.0, "cnc has no tag nope"),
]


async def test_a_value_that_does_not_fit_is_refused_without_a_write(
        driver: OpcUaDriver, opcua_sim: OpcUaSimulator) -> None:
    """One simulator for every case (a server start costs seconds on a busy box)."""
    reasons = []
    for tag, value, _ in REFUSALS:
        with pytest.raises(WriteRefused) as refused:
            await driver.write(tag, value)
        reasons.append(str(refused.value))
    for (tag, value, expected), got in zip(REFUSALS, reasons, strict=True):
        assert expected in got, (tag, value, got)
    assert opcua_sim.written == []
    assert await server_value(opcua_sim, "Cnc.Setpoints.SpindleSpeed") == 0.0
    assert await server_value(opcua_sim, "Cnc.Setpoints.SpindleOverride") == 100
