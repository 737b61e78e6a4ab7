"""Shared Modbus links on real parts: several unit ids behind one host:port (Modbus TCP, RTU
over TCP, a one-connection serial gateway) and on one serial line (a pty pair), polled by the
real supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import yaml

from drivers.modbus.link import links
from gateway.config import GatewayConfig, parse_config
from gateway.models import Quality, Reading
from gateway.state import GatewayState
from gateway.supervisor import DeviceSupervisor, build_drivers
from simulators.modbus import ModbusSimulator, register_map

pytestmark = pytest.mark.integration
DEADLINE = 30.0  # generous: the box is shared


def device(unit_id: int, interval: str, connection: dict[str, Any],
           tags_of: int | None = None) -> dict[str, Any]:
    """A device entry with the simulator's tags of unit `tags_of` (default: its own)."""
    entry = next(m for m in register_map() if m["unit_id"] == (tags_of or unit_id))
    return {"name": f"unit-{unit_id}", "driver": "modbus", "poll_interval": interval,
            "reconnect_max_backoff": "1s",
            "connection": {"unit_id": unit_id, "timeout": "300ms", **connection},
            "tags": entry["tags"]}


def machine_tags(unit_id: int) -> list[dict[str, Any]]:
    return next(m["tags"] for m in register_map() if m["unit_id"] == unit_id)


def config_of(devices: list[dict[str, Any]]) -> GatewayConfig:
    text = yaml.safe_dump({"gateway": {"id": "links-test"}, "devices": devices,
                           "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1"}}})
    return parse_config(text)


class Polls:
    """What the supervisor published, one batch per poll."""

    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []

    def publish(self, readings: Any) -> None:
        if readings:
            self.batches.append(list(readings))

    def good(self, name: str) -> int:
        """Polls of `name` whose readings were all good."""
        return sum(1 for b in self.batches if b[0].device == name
                   and all(r.quality == Quality.GOOD for r in b))

    def bad(self, name: str) -> int:
        return sum(1 for b in self.batches if b[0].device == name
                   and all(r.quality == Quality.BAD for r in b))


@contextlib.asynccontextmanager
async def supervising(config: GatewayConfig) -> AsyncIterator[tuple[DeviceSupervisor, Polls]]:
    polls = Polls()
    supervisor = DeviceSupervisor(GatewayState(config=config, sinks=[]), polls.publish)
    async with asyncio.TaskGroup() as group:
        supervisor.start_all(group, build_drivers(config.devices))
        try:
            yield supervisor, polls
        finally:
            await supervisor.stop_all()


async def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def tcp(simulator: ModbusSimulator, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": simulator.port, **extra}


async def test_three_devices_share_one_connection_each_on_its_own_interval(
        modbus_simulator: ModbusSimulator) -> None:
    config = config_of([device(1, "100ms", tcp(modbus_simulator)),
                        device(2, "300ms", tcp(modbus_simulator)),
                        device(3, "1s", tcp(modbus_simulator))])
    async with supervising(config) as (supervisor, polls):
        await until(lambda: polls.good("unit-3") >= 3, "three polls of the slowest device")
        assert modbus_simulator.connections == 1
        link = links().get(("tcp", "127.0.0.1", str(modbus_simulator.port), "socket"))
        assert link is not None and set(link.users) == {"unit-1", "unit-2", "unit-3"}
        assert all(supervisor.is_up(f"unit-{u}") for u in (1, 2, 3))
        # Each on its own grid: ten polls a second against one (3 and 1 expected).
        assert polls.good("unit-1") >= 3 * polls.good("unit-3")
        assert polls.good("unit-1") > polls.good("unit-2") > polls.good("unit-3") - 1
    assert len(links()) == 0  # the last device to leave closed the link


async def test_a_unit_that_is_not_there_turns_only_its_own_device_bad(
        modbus_simulator: ModbusSimulator) -> None:
    config = config_of([device(1, "100ms", tcp(modbus_simulator)),
                        device(9, "100ms", tcp(modbus_simulator), tags_of=1),
                        device(3, "100ms", tcp(modbus_simulator))])
    async with supervising(config) as (_, polls):
        await until(lambda: polls.bad("unit-9") >= 3 and polls.good("unit-1") >= 3
                    and polls.good("unit-3") >= 3, "polls of all three")
        assert polls.good("unit-9") == 0
        reason = next(b for b in polls.batches if b[0].device == "unit-9")[0].error
        assert reason is not None and "exception 11" in reason
        assert modbus_simulator.connections == 1


async def test_a_silent_unit_times_out_alone_and_the_link_stays_open(
        modbus_simulator: ModbusSimulator) -> None:
    config = config_of([device(u, "100ms", tcp(modbus_simulator)) for u in (1, 2, 3)])
    async with supervising(config) as (supervisor, polls):
        await until(lambda: all(supervisor.is_up(f"unit-{u}") for u in (1, 2, 3)), "all up")
        modbus_simulator.set_fault(2, "silent")
        await until(lambda: not supervisor.is_up("unit-2"), "unit 2 marked unreachable")
        before = {u: polls.good(f"unit-{u}") for u in (1, 3)}
        await until(lambda: all(polls.good(f"unit-{u}") >= before[u] + 10 for u in (1, 3)),
                    "ten more good polls of units 1 and 3")
        assert supervisor.is_up("unit-1") and supervisor.is_up("unit-3")
        error = supervisor.state.health["unit-2"].error
        assert error is not None and "no answer from unit 2" in error
        assert modbus_simulator.connections == 1  # nobody closed the shared link
        modbus_simulator.set_fault(2, "none")
        await until(lambda: supervisor.is_up("unit-2"), "unit 2 back")
        assert modbus_simulator.connections == 1


async def test_a_one_connection_gateway_serves_all_three() -> None:
    async with ModbusSimulator(port=0, seed=1, max_connections=1) as simulator:
        # The limit bites: a second client is closed at once.
        first = await asyncio.open_connection("127.0.0.1", simulator.port)
        second = await asyncio.open_connection("127.0.0.1", simulator.port)
        assert await asyncio.wait_for(second[0].read(), DEADLINE) == b""
        for _, writer in (first, second):
            writer.close()
        await until(lambda: simulator.refused == 1, "the second client refused")
        config = config_of([device(u, "100ms", tcp(simulator)) for u in (1, 2, 3)])
        async with supervising(config) as (_, polls):
            await until(lambda: all(polls.good(f"unit-{u}") >= 5 for u in (1, 2, 3)),
                        "five good polls of each")
            assert simulator.refused == 1
            assert simulator.connections == 2  # the probe above, then the gateway's one


async def test_link_delay_spaces_the_requests(modbus_simulator: ModbusSimulator) -> None:
    delay = 0.05
    config = config_of([device(u, "50ms", tcp(modbus_simulator, link_delay="50ms"))
                        for u in (1, 2, 3)])
    async with supervising(config) as (_, polls):
        await until(lambda: all(polls.good(f"unit-{u}") >= 3 for u in (1, 2, 3)), "polls")
        arrivals = [t for t, _ in modbus_simulator.arrivals]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) >= 10
    assert min(gaps) >= 0.8 * delay, sorted(gaps)[:5]


async def test_rtu_over_tcp() -> None:
    async with ModbusSimulator(port=0, seed=1, framer="rtu") as simulator:
        simulator.freeze(True)
        config = config_of([device(u, "100ms", tcp(simulator, framer="rtu")) for u in (1, 2)])
        async with supervising(config) as (_, polls):
            await until(lambda: polls.good("unit-1") >= 2 and polls.good("unit-2") >= 2,
                        "good polls over RTU framing")
            batch = next(b for b in polls.batches if b[0].device == "unit-2")
            values = {r.tag: r.value for r in batch}
            assert values["barrel_zone_1"] == pytest.approx(
                simulator.value_of(2, "barrel_zone_1"), rel=1e-6)
            assert simulator.connections == 1


async def test_one_serial_line_three_units_one_silent(rtu_pty_pair: tuple[str, str]) -> None:
    gateway_end, plc_end = rtu_pty_pair
    simulator = ModbusSimulator(seed=3, serial_port=plc_end, baudrate=19200)
    async with simulator:
        line = {"serial": gateway_end, "baudrate": 19200}
        config = config_of([device(1, "200ms", line), device(9, "200ms", line, tags_of=1),
                            device(3, "200ms", line)])
        async with supervising(config) as (supervisor, polls):
            await until(lambda: polls.good("unit-1") >= 10 and polls.good("unit-3") >= 10,
                        "ten good polls of the two units that answer")
            assert polls.good("unit-9") == 0
            error = supervisor.state.health["unit-9"].error
            assert error is not None and "no answer from unit 9" in error
            link = links().get(("serial", gateway_end))
            assert link is not None and link.connects == 1


async def test_one_serial_line_three_units_every_tag_good(
        rtu_pty_pair: tuple[str, str]) -> None:
    """Units 1-3 daisy-chained on one RTU line: every unit's every tag reads good, with the
    value its machine holds, over one serial port."""
    gateway_end, plc_end = rtu_pty_pair
    simulator = ModbusSimulator(seed=3, serial_port=plc_end, baudrate=19200)
    simulator.freeze(True)
    async with simulator:
        line = {"serial": gateway_end, "baudrate": 19200, "link_delay": "2ms"}
        config = config_of([device(u, "200ms", line) for u in (1, 2, 3)])
        async with supervising(config) as (_, polls):
            await until(lambda: all(polls.good(f"unit-{u}") >= 3 for u in (1, 2, 3)),
                        "three good polls of every unit on the line")
            link = links().get(("serial", gateway_end))
            assert link is not None and link.connects == 1
        for unit in (1, 2, 3):
            batch = next(b for b in polls.batches if b[0].device == f"unit-{unit}"
                         and all(r.quality == Quality.GOOD for r in b))
            assert {r.tag for r in batch} == {t["name"] for t in machine_tags(unit)}
            for reading in batch:
                if reading.tag != "poll_sequence":
                    held = simulator.value_of(unit, reading.tag)
                    if isinstance(held, float):
                        held = pytest.approx(held, rel=1e-6, abs=1e-9)
                    assert reading.value == held, reading


async def test_a_removed_device_leaves_the_link_to_the_others(
        modbus_simulator: ModbusSimulator) -> None:
    config = config_of([device(u, "100ms", tcp(modbus_simulator)) for u in (1, 2, 3)])
    async with supervising(config) as (supervisor, polls):
        await until(lambda: all(polls.good(f"unit-{u}") >= 2 for u in (1, 2, 3)), "polls")
        async with supervisor.lock:
            await supervisor.stop("unit-2")
        before = polls.good("unit-1")
        await until(lambda: polls.good("unit-1") >= before + 5, "unit 1 polling on")
        link = links().get(("tcp", "127.0.0.1", str(modbus_simulator.port), "socket"))
        assert link is not None and set(link.users) == {"unit-1", "unit-3"}
        assert modbus_simulator.connections == 1


async def test_the_link_reconnects_and_every_device_keeps_polling(
        modbus_simulator: ModbusSimulator) -> None:
    config = config_of([device(u, "100ms", tcp(modbus_simulator)) for u in (1, 2, 3)])
    async with supervising(config) as (supervisor, polls):
        await until(lambda: all(supervisor.is_up(f"unit-{u}") for u in (1, 2, 3)), "all up")
        await modbus_simulator.stop()
        await until(lambda: not any(supervisor.is_up(f"unit-{u}") for u in (1, 2, 3)),
                    "all three unreachable")
        await modbus_simulator.start()
        before = {u: polls.good(f"unit-{u}") for u in (1, 2, 3)}
        await until(lambda: all(polls.good(f"unit-{u}") >= before[u] + 3 for u in (1, 2, 3)),
                    "every device polling again")
        assert modbus_simulator.connections == 2


async def test_the_simulator_cli_serves_a_one_connection_rtu_gateway() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators", "--modbus-port", "0", "--framer", "rtu",
        "--max-connections", "1", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
        port = int(line.decode().rsplit(":", 1)[1])  # "modbus simulator: ... on HOST:PORT"
        config = config_of([device(u, "100ms", {"host": "127.0.0.1", "port": port,
                                                "framer": "rtu"}) for u in (1, 2, 3)])
        async with supervising(config) as (_, polls):
            await until(lambda: all(polls.good(f"unit-{u}") >= 3 for u in (1, 2, 3)),
                        "good polls of all three through one RTU connection")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), DEADLINE)
