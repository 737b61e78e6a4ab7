"""Each demo machine's writable setpoint, written over a real socket (pymodbus, the gateway's
Modbus driver, asyncua), and the machine model following it; `gateway check --writable` on the
demo configs lists exactly that one setpoint per machine."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus import ModbusDriver
from drivers.modbus.config import ModbusDeviceConfig
from gateway.demo import demo_config
from simulators.modbus import ModbusSimulator, register_map
from simulators.modbus.machines import MODELS
from simulators.opcua import OpcUaSimulator
from simulators.opcua.address_space import NS_URI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]
PRESS, MOULDING, PACKER = 1, 2, 3
SEED = 1  # the modbus_simulator fixture's
DEMO_SETPOINTS = {"press-01": "stroke_setpoint", "moulding-02": "barrel_setpoint",
                  "packer-03": "speed_setpoint", "cnc-01": "spindle_speed_setpoint"}


@pytest.fixture
async def client(modbus_simulator: ModbusSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=modbus_simulator.port, timeout=2,
                                  retries=0)
    assert await client.connect()
    yield client
    client.close()


async def read_holding(client: AsyncModbusTcpClient, unit: int, address: int, fmt: str,
                       little_words: bool = False, little_bytes: bool = False) -> Any:
    """One value of holding registers, decoded with struct (independent of both codecs)."""
    count = struct.calcsize(fmt) // 2
    answer = await client.read_holding_registers(address, count=count, device_id=unit)
    assert not answer.isError(), answer
    words = [r.to_bytes(2, "big") for r in answer.registers]
    if little_bytes:
        words = [w[::-1] for w in words]
    if little_words:
        words.reverse()
    return struct.unpack(">" + fmt, b"".join(words))[0]


async def counts_along(simulator: ModbusSimulator, read: Any, start: float, end: float,
                       step: float = 1.0) -> list[int]:
    """Drive the simulator's clock from `start` to `end`, reading a counter at every step."""
    counts = []
    t = start
    while t <= end:
        simulator.set_time(t)
        counts.append(await read())
        t += step
    return counts


def schedule_gain(kind: str, name: str, counter: str, start: float, end: float) -> int:
    """What the seeded schedule alone counts between two times (the pure model)."""
    model = MODELS[kind]
    return int(model(end, 0, SEED, name)[counter] - model(start, 0, SEED, name)[counter])


async def test_press_counts_twice_as_fast_at_twice_the_stroke_setpoint(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    async def cycle_counter() -> int:
        return int(await read_holding(client, PRESS, 2, "I"))

    modbus_simulator.set_time(100.0)
    assert (await client.read_holding_registers(14, count=1, device_id=PRESS)).registers == [27]
    assert not (await client.write_register(14, 54, device_id=PRESS)).isError()
    counts = await counts_along(modbus_simulator, cycle_counter, 100.0, 400.0)
    assert counts == sorted(counts), "the cycle counter went backwards"
    gained, scheduled = counts[-1] - counts[0], schedule_gain(
        "stamping_press", "press-01", "cycle_counter", 100.0, 400.0)
    assert scheduled > 50, scheduled  # the press ran for a good part of the window
    assert 1.8 <= gained / scheduled <= 2.2, (gained, scheduled)
    assert modbus_simulator.value_of(PRESS, "stroke_setpoint") == 54


async def test_press_at_its_default_setpoint_keeps_the_seeded_schedule(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    async def cycle_counter() -> int:
        return int(await read_holding(client, PRESS, 2, "I"))

    assert not (await client.write_register(14, 27, device_id=PRESS)).isError()
    counts = await counts_along(modbus_simulator, cycle_counter, 0.0, 300.0, step=5.0)
    press = MODELS["stamping_press"]
    assert counts == [press(5.0 * i, 0, SEED, "press-01")["cycle_counter"]
                      for i in range(len(counts))]
    assert counts[-1] > counts[0]


async def test_packer_speed_and_pack_counter_follow_the_speed_setpoint(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    async def pack_counter() -> int:
        return int(await read_holding(client, PACKER, 11, "I", little_words=True))

    modbus_simulator.set_time(100.0)
    assert (await client.read_holding_registers(13, count=1, device_id=PACKER)).registers == [55]
    assert not (await client.write_register(13, 110, device_id=PACKER)).isError()
    counts = await counts_along(modbus_simulator, pack_counter, 100.0, 400.0)
    assert counts == sorted(counts), "the pack counter went backwards"
    gained = counts[-1] - counts[0]
    scheduled = schedule_gain("packaging_line", "packer-03", "pack_counter", 100.0, 400.0)
    assert scheduled > 50 and 1.8 <= gained / scheduled <= 2.2, (gained, scheduled)
    moment = next(t for t in range(400, 4000, 5)
                  if MODELS["packaging_line"](float(t), 0, SEED, "packer-03")["speed"])
    modbus_simulator.set_time(float(moment))
    speed = await read_holding(client, PACKER, 4, "f", little_words=True, little_bytes=True)
    assert 100 <= speed <= 120, speed  # 2x the model's 54.5 +/- 2 packs/min
    good = await read_holding(client, PACKER, 0, "I", little_words=True)
    rejects = await read_holding(client, PACKER, 2, "I", little_words=True)
    assert good + rejects == await pack_counter()  # the extra packs are good ones


async def test_moulding_barrel_heats_first_order_to_a_setpoint_written_by_the_driver(
        modbus_simulator: ModbusSimulator, client: AsyncModbusTcpClient) -> None:
    """Through the gateway's own Modbus driver, so its scale (0.1 degC) is reversed on the
    way in; the nozzle zone gets 63% of the way in one time constant (15 s)."""
    [machine] = [m for m in register_map() if m["unit_id"] == MOULDING]
    driver = ModbusDriver(ModbusDeviceConfig.model_validate({
        "name": "moulding-02", "driver": "modbus", "tags": machine["tags"],
        "connection": {"host": "127.0.0.1", "port": modbus_simulator.port,
                       "unit_id": MOULDING, "timeout": "2s"}}))

    async def zone(address: int) -> float:
        return float(await read_holding(client, MOULDING, address, "f", little_words=True))

    await driver.connect()
    try:
        modbus_simulator.set_time(50.0)
        assert 244 <= await zone(4) <= 246
        assert await driver.write("barrel_setpoint", 260.0) == 260.0
    finally:
        await driver.close()
    assert (await client.read_holding_registers(14, count=1, device_id=MOULDING)).registers \
        == [2600]
    temperatures = []
    for t in range(51, 111):
        modbus_simulator.set_time(float(t))
        temperatures.append(await zone(4))
    one_time_constant = temperatures[14]  # t = 65, 15 s after the write
    assert 252.0 <= one_time_constant <= 257.5, temperatures
    assert 258.5 <= temperatures[-1] <= 261.0, temperatures
    assert 233.5 <= await zone(0) <= 236.5  # zone 1 keeps its 25 degC below the nozzle


async def test_cnc_spindle_follows_its_speed_setpoint_written_by_a_client(
        opcua_sim: OpcUaSimulator) -> None:
    async with Client(opcua_sim.endpoint, timeout=10) as opc:
        ns = await opc.get_namespace_index(NS_URI)
        setpoint = opc.get_node(ua.NodeId("Cnc.Setpoints.SpindleSpeed", ns))
        speed = opc.get_node(ua.NodeId("Cnc.SpindleSpeed", ns))
        state = opc.get_node(ua.NodeId("Cnc.State", ns))
        await setpoint.write_value(ua.DataValue(ua.Variant(6000.0, ua.VariantType.Double)))
        assert await setpoint.read_value() == 6000.0
        deadline = time.monotonic() + 60
        seen = []
        while True:  # the programs' own speeds are 8000..15000 r/min
            value, running = await speed.read_value(), await state.read_value() == "RUNNING"
            seen.append(value)
            if running and 5950 <= value <= 6050:
                break
            assert time.monotonic() < deadline, seen[-20:]
            await asyncio.sleep(0.05)
    assert opcua_sim.machine.spindle_setpoint == 6000.0


def check_writable(path: Path) -> dict[str, list[str]]:
    """`gateway check --writable`'s writable tags, by device."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--writable", "--config", str(path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0, result.stderr
    # Every setpoint has min and max. (Only that warning: another program on the box may hold
    # the config's status port, which `check` also warns about.)
    assert "without min/max" not in result.stderr, result.stderr
    found: dict[str, list[str]] = {}
    for device, tag in re.findall(r"^  ([\w-]+)\.(\w+): ", result.stdout, re.MULTILINE):
        found.setdefault(device, []).append(tag)
    return found


def test_gateway_check_lists_one_setpoint_per_machine_of_the_demo(tmp_path: Path) -> None:
    config = demo_config(5020, "mqtt://127.0.0.1:1883", tmp_path / "buffer.db", 8080,
                         opcua_endpoint="opc.tcp://127.0.0.1:4840/")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert check_writable(path) == {d: [t] for d, t in DEMO_SETPOINTS.items()}


@pytest.mark.parametrize("name", ["modbus-demo.yaml", "opcua-demo.yaml"])
def test_gateway_check_lists_one_setpoint_per_machine_of_the_shipped_demo_configs(
        name: str) -> None:
    devices = [d["name"] for d in yaml.safe_load((ROOT / "config" / name).read_text())["devices"]]
    assert check_writable(ROOT / "config" / name) == {d: [DEMO_SETPOINTS[d]] for d in devices}
