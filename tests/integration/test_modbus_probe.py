"""`gateway probe` against the Modbus simulator over a real socket and a pty pair: the units and
ranges it finds, the byte/word orders it ranks first, its bounds, its one-line errors."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drivers.modbus.config import ModbusConnection
from drivers.modbus.probe import Prober, probe_map
from simulators.modbus import ModbusSimulator
from simulators.modbus.server import free_port
from tests.procs import port_open, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "modbus-demo.yaml"
TIMEOUT = 120


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=ROOT)


@pytest.fixture
def simulator_port() -> object:
    """`python -m simulators` on a free port (moving values), stopped after the test."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--modbus-port", str(port),
                             "--seed", "1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), 30, "the Modbus simulator")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_probe_finds_the_simulators_units_and_ranges(simulator_port: int) -> None:
    done = gateway("probe", f"modbus://127.0.0.1:{simulator_port}", "--units", "1-8")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["units"] == {u: {"holding": ["0-255"], "input": ["0-255"]}
                                for u in (1, 2, 3)}
    assert [d["connection"]["unit_id"] for d in printed["devices"]] == [1, 2, 3]
    assert printed["devices"][0]["tags"][0] == {"name": "holding_0", "table": "holding",
                                                "address": 0, "type": "uint16"}
    requests = int(re.search(r"(\d+) requests", done.stdout)[1])  # type: ignore[index]
    assert requests < 8 + 3 * 2 * 175  # bounded: units, then ~170 reads per table


def test_probe_ranks_the_right_order_first_for_every_float_of_the_demo(
        simulator_port: int, tmp_path: Path) -> None:
    text = DEMO.read_text().replace("port: 5020", f"port: {simulator_port}")
    truth = {}
    for machine in yaml.safe_load(text)["devices"]:
        for tag in machine["tags"]:
            if tag["type"] in ("float32", "float64"):
                truth[tag["name"]] = (tag.get("byte_order", "big"), tag.get("word_order", "big"))
    # Every order forgotten: the probe must find each one again.
    wrong = re.sub(r", (byte|word)_order: (big|little)", "", text)
    config = tmp_path / "plant.yaml"
    config.write_text(wrong)
    done = gateway("probe", "--config", str(config))
    assert done.returncode == 0, done.stderr
    suggested = {m[0]: (m[1], m[2]) for m in re.findall(
        r"^\+  - \{name: (\w+),.*byte_order: (\w+), word_order: (\w+)\}$", done.stdout, re.M)}
    expected = {name: order for name, order in truth.items() if order != ("big", "big")}
    assert {n: suggested[n] for n in expected if n in suggested} == expected
    assert set(expected) <= set(suggested)
    for name, order in truth.items():
        if order == ("big", "big"):
            assert name not in suggested
            assert re.search(rf"{name} .*plausible: as configured", done.stdout)
    # The correct config has nothing to change.
    config.write_text(text)
    again = gateway("probe", "--config", str(config))
    assert "# 0 tag(s) read better in another order" in again.stdout, again.stdout


async def test_probe_over_a_serial_line_skips_silent_units(
        rtu_pty_pair: tuple[str, str]) -> None:
    gateway_end, plc_end = rtu_pty_pair
    async with ModbusSimulator(seed=3, serial_port=plc_end, baudrate=19200):
        connection = ModbusConnection.model_validate(
            {"serial": gateway_end, "baudrate": 19200, "timeout": "200ms"})
        prober = Prober(connection, budget=60, max_requests=2000)
        await prober.open()
        try:
            maps, exhausted = await probe_map(prober, range(1, 6), ["holding"], 0, 299)
        finally:
            prober.close()
    assert not exhausted
    assert [m.unit for m in maps] == [1, 2, 3]  # units 4 and 5 stay silent on the line
    assert all(m.tables["holding"].ranges == [(0, 255)] for m in maps)


async def test_the_budget_bounds_the_probe(modbus_simulator: ModbusSimulator) -> None:
    connection = ModbusConnection.model_validate({"host": "127.0.0.1",
                                                  "port": modbus_simulator.port})
    prober = Prober(connection, budget=60, max_requests=50)
    await prober.open()
    try:
        maps, exhausted = await asyncio.wait_for(
            probe_map(prober, range(1, 248), ["holding", "input"], 0, 9999), TIMEOUT)
    finally:
        prober.close()
    assert exhausted and prober.requests == 50
    assert [m.unit for m in maps] == [1, 2, 3]  # found before the cap; their scan cut short


@pytest.mark.parametrize(("args", "message"), [
    (["modbus://127.0.0.1:1"], "probe: cannot connect to 127.0.0.1:1"),
    (["http://127.0.0.1:502"], "want modbus://HOST[:PORT]"),
    (["modbus://127.0.0.1:502", "--units", "0-300"], "--units '0-300' must lie within"),
    (["modbus://127.0.0.1:502", "--tables", "holding,registers"], "--tables wants some of"),
    ([], "give modbus://HOST:PORT or --serial DEVICE"),
    (["--config", "/nonexistent.yaml"], "cannot read /nonexistent.yaml"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = gateway("probe", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
