"""The Modbus simulator on a pty of its own (`serial_port="pty"`, `--serial pty`): a real tty
that the gateway's driver opens like a USB adapter, no socat; the line outlives a client that
closes and reopens it, and the pty is gone when the simulator stops. (`--serial` is the same
option as `--modbus-serial`, as `gateway probe --serial` names it.)"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.driver import ModbusDriver
from gateway.models import Quality
from simulators.modbus import ModbusSimulator, register_map
from simulators.modbus.pty import PTY

pytestmark = pytest.mark.integration

DEADLINE = 30.0  # generous: the box is shared


def driver_on(path: str, unit_id: int) -> ModbusDriver:
    machine = next(m for m in register_map() if m["unit_id"] == unit_id)
    return ModbusDriver(ModbusDeviceConfig.model_validate(
        {"name": f"unit-{unit_id}", "driver": "modbus", "poll_interval": "1s",
         "connection": {"serial": path, "baudrate": 19200, "unit_id": unit_id, "timeout": "2s"},
         "tags": machine["tags"]}))


def gone(path: str) -> bool:
    return not Path(path).exists()


async def good_read(driver: ModbusDriver) -> None:
    """Connect and read until one poll is all good (bounded)."""
    await driver.connect()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        readings = await driver.read()
        if readings and all(r.quality == Quality.GOOD for r in readings):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no all-good poll of {driver.name} within {DEADLINE}s")


async def test_every_unit_reads_good_on_the_simulators_own_pty() -> None:
    simulator = ModbusSimulator(seed=2, serial_port=PTY, baudrate=19200)
    async with simulator:
        path = simulator.serial_path
        assert path is not None and path.startswith("/dev/pts/")
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            assert os.isatty(fd)
        finally:
            os.close(fd)
        drivers = [driver_on(path, unit) for unit in sorted(simulator.units)]
        try:
            for driver in drivers:  # one after the other: one line, one request at a time
                await good_read(driver)
        finally:
            for driver in drivers:
                await driver.close()
    assert simulator.serial_path is None
    assert gone(path)  # the kernel removes a pty's slave once both ends close


async def test_the_line_outlives_a_client_that_closes_and_reopens_it() -> None:
    """Without the simulator's own hold on the slave side, the master would hang up when the
    client closes, and pymodbus would close the server's line for good."""
    async with ModbusSimulator(seed=2, serial_port=PTY, baudrate=19200) as simulator:
        assert simulator.serial_path is not None
        for _ in range(3):
            driver = driver_on(simulator.serial_path, 1)
            try:
                await good_read(driver)
            finally:
                await driver.close()
            # Time for a hang-up to reach the simulator's loop (the client's next open would
            # otherwise clear it first): this wait lets the fault show, the pass needs none.
            await asyncio.sleep(0.3)


async def test_the_cli_prints_the_pty_to_open() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--modbus-serial", "pty", "--baudrate", "19200",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), DEADLINE)).decode()
        assert line.startswith("modbus simulator: units [1, 2, 3] on /dev/pts/"), line
        path = line.split(" on ", 1)[1].strip()
        driver = driver_on(path, 2)
        try:
            await good_read(driver)
        finally:
            await driver.close()
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), DEADLINE)
