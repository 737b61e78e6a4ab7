"""Bus scenario: many units on one shared RTU line, the simulator pacing its answers to the
line's byte time (a pty carries bytes at once), every device polled back to back.
Reports readings/s, the cycle time (every unit polled once) and the bus utilisation against the
wire's physical minimum (bytes on the wire / baud rate, with RTU's frame gaps).

    python -m bench.modbus_bus [--units 10] [--baudrate 115200] [--seconds 20] [--separate]
                               [--socat]

The line is the simulator's own pty (simulators/modbus/pty.py): the gateway opens its
/dev/pts side as it would a USB adapter, and bytes cross in the kernel. `--socat` puts a socat
pty pair in between instead (two relay hops per direction's bytes, as the tests' bus does).
`--separate` runs the simulator in its own process, so that the cycle measures the gateway's
own overhead rather than both ends sharing one event loop and core.

Not in the CI smoke run (it takes 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.planner import ReadRequest
from gateway.models import Quality
from simulators.modbus import ModbusSimulator
from simulators.modbus.machines import Machine, load_machines
from simulators.modbus.pacing import wire_seconds
from simulators.modbus.pty import PTY

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


@dataclasses.dataclass
class Tally:
    polls: int = 0
    good: int = 0
    bad: int = 0
    wire: float = 0.0  # physical minimum of the exchanges done


def machines(units: int) -> list[Machine]:
    """`units` machines, unit ids 1..units, cycling through the simulator's three kinds."""
    kinds = load_machines()
    return [dataclasses.replace(kinds[i % len(kinds)], unit_id=i + 1) for i in range(units)]


def device(machine: Machine, line: str, baudrate: int) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate(
        {"name": f"unit-{machine.unit_id}", "driver": "modbus", "poll_interval": "1s",
         "connection": {"serial": line, "baudrate": baudrate, "unit_id": machine.unit_id,
                        "timeout": "1s"},
         "tags": machine.tags})


def request_wire(request: ReadRequest, baudrate: int) -> float:
    return wire_seconds(FUNCTION[request.table], request.count, baudrate)


async def poll(driver: ModbusDriver, until: float, tally: Tally, baudrate: int) -> None:
    cycle_wire = sum(request_wire(r, baudrate) for r in driver.plan.requests)
    while time.monotonic() < until:
        readings = await driver.read()
        tally.polls += 1
        tally.good += sum(r.quality == Quality.GOOD for r in readings)
        tally.bad += sum(r.quality != Quality.GOOD for r in readings)
        tally.wire += cycle_wire


def paced_simulator(units: int, plc_end: str | None, baudrate: int) -> ModbusSimulator:
    """`plc_end` None: on a pty of the simulator's own."""
    simulator = ModbusSimulator(machines(units), serial_port=plc_end or PTY, baudrate=baudrate,
                                pace_baudrate=baudrate)
    simulator.freeze(True)
    return simulator


async def serve(units: int, baudrate: int, plc_end: str) -> None:
    """The paced simulator alone (`--serve`), until SIGTERM: in its own process, it does not
    share the gateway's event loop and core. Prints `ready <the gateway's end>`."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with paced_simulator(units, None if plc_end == PTY else plc_end, baudrate) as sim:
        print("ready", sim.serial_path, flush=True)
        await stop.wait()


@contextlib.asynccontextmanager
async def simulator_on(plc_end: str | None, units: int, baudrate: int,
                       separate: bool) -> AsyncIterator[str]:
    """The paced simulator on `plc_end` (None: its own pty), in this event loop or in a child
    process; yields the path the gateway opens (the pty's other end)."""
    if not separate:
        async with paced_simulator(units, plc_end, baudrate) as simulator:
            assert simulator.serial_path is not None
            yield simulator.serial_path
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.modbus_bus", "--serve", plc_end or PTY, "--units",
        str(units), "--baudrate", str(baudrate), stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        ready = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().split()
        if not ready or ready[0] != "ready":
            raise SystemExit("error: the simulator process did not start")
        yield ready[1]
    finally:
        if child.returncode is None:
            child.terminate()
        await asyncio.wait_for(child.wait(), 10)


async def measure(units: int, baudrate: int, seconds: float, gateway_end: str | None,
                  plc_end: str | None, separate: bool = False) -> dict[str, Any]:
    """One run; `gateway_end`/`plc_end` None: the simulator's own pty, else a socat pair's."""
    fleet = machines(units)
    async with simulator_on(plc_end, units, baudrate, separate) as own_end:
        gateway_end = gateway_end or own_end
        drivers = [ModbusDriver(device(m, gateway_end, baudrate)) for m in fleet]
        for driver in drivers:
            await driver.connect()
        tallies = [Tally() for _ in drivers]
        try:
            started = time.monotonic()
            await asyncio.gather(*(poll(d, started + seconds, t, baudrate)
                                   for d, t in zip(drivers, tallies, strict=True)))
            elapsed = time.monotonic() - started
        finally:
            for driver in drivers:
                await driver.close()
    minimum = sum(sum(request_wire(r, baudrate) for r in d.plan.requests) for d in drivers)
    polls = sum(t.polls for t in tallies)
    return {"units": units, "baudrate": baudrate, "separate": separate,
            "line": "socat pty pair" if plc_end else "the simulator's own pty",
            "seconds": round(elapsed, 1),
            "requests_per_cycle": sum(len(d.plan.requests) for d in drivers),
            "readings_per_s": round(sum(t.good for t in tallies) / elapsed),
            "bad_readings": sum(t.bad for t in tallies),
            "cycle_ms": round(1000 * elapsed * units / polls, 1),
            "wire_minimum_cycle_ms": round(1000 * minimum, 1),
            "bus_utilisation": round(sum(t.wire for t in tallies) / elapsed, 3),
            "fewest_polls_of_a_unit": min(t.polls for t in tallies)}


def pty_pair(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    a, b = folder / "ttyGW", folder / "ttyPLC"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("error: socat did not make its pty pair (is socat installed?)")
        time.sleep(0.05)
    return proc, str(a), str(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modbus_bus", description=__doc__)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--separate", action="store_true",
                        help="run the simulator in its own process (the gateway's own share)")
    parser.add_argument("--socat", action="store_true",
                        help="a socat pty pair between the ends, not the simulator's own pty")
    parser.add_argument("--serve", metavar="PTY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.units, args.baudrate, args.serve))
        return 0
    if not 1 <= args.units <= 247 or args.baudrate < 1200 or args.seconds <= 0:
        parser.error("--units 1..247, --baudrate >= 1200, --seconds > 0")
    if not args.socat:
        result = asyncio.run(measure(args.units, args.baudrate, args.seconds, None, None,
                                     args.separate))
    else:
        with tempfile.TemporaryDirectory() as folder:
            proc, gateway_end, plc_end = pty_pair(Path(folder))
            try:
                result = asyncio.run(measure(args.units, args.baudrate, args.seconds,
                                             gateway_end, plc_end, args.separate))
            finally:
                proc.terminate()
                proc.wait(5)
    ratio = result["cycle_ms"] / result["wire_minimum_cycle_ms"]
    print(" ".join(f"{k}={v}" for k, v in result.items()), f"cycle_vs_wire_minimum={ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
