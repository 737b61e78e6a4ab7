"""Where an exchange's time goes on the bus bench (`bench.modbus_bus --separate`): time stamps
at the gateway's serial write and read, and at the simulator's request arrival and answer
send (one monotonic clock, two processes), split each exchange into

    gateway turnaround   answer read -> next request written (the gateway's own Python)
    hop in               request written -> simulator has it (socat relay + its wake-up)
    pacing error         simulator's send - arrival - the wire time it paces to
    hop out              answer sent -> gateway reads it (socat relay + the gateway's wake-up)

    python -m bench.modbus_bus_trace [--seconds 10]

A profiling aid: it wraps pymodbus's SerialTransport and the simulator's handler methods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pymodbus.transport import serialtransport

from bench import modbus_bus as bus
from simulators.modbus import server
from simulators.modbus.pacing import wire_seconds

STAMPS: defaultdict[str, list[float]] = defaultdict(list)


def stamp_gateway() -> None:
    """Stamp each serial write and read of this process."""
    cls = serialtransport.SerialTransport
    write, read = cls.intern_write_ready, cls.intern_read_ready

    def stamped_write(self: Any) -> None:
        STAMPS["written"].append(time.monotonic())
        write(self)

    def stamped_read(self: Any) -> None:
        STAMPS["read"].append(time.monotonic())
        read(self)

    cls.intern_write_ready, cls.intern_read_ready = stamped_write, stamped_read  # type: ignore[method-assign]


def stamp_simulator(baudrate: int) -> None:
    """Stamp each request's arrival (with its wire time) and each answer's send."""
    handler = server._RequestHandler
    data, send = handler.callback_data, handler.server_send

    def stamped_data(self: Any, chunk: bytes, addr: Any = None) -> int:
        arrived = time.monotonic()
        used = data(self, chunk, addr)
        if self.last_pdu is not None:
            count = getattr(self.last_pdu, "count", 1) or 1
            STAMPS["arrived"].append(arrived)
            STAMPS["wire"].append(wire_seconds(self.last_pdu.function_code, count, baudrate))
        return used

    def stamped_send(self: Any, *args: Any, **kwargs: Any) -> None:
        STAMPS["sent"].append(time.monotonic())
        send(self, *args, **kwargs)

    handler.callback_data, handler.server_send = stamped_data, stamped_send  # type: ignore[method-assign]


async def serve(plc_end: str, units: int, baudrate: int) -> None:
    stamp_simulator(baudrate)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with bus.paced_simulator(units, plc_end, baudrate):
        print("ready", flush=True)
        await stop.wait()


async def poll_all(gateway_end: str, units: int, baudrate: int, seconds: float) -> float:
    drivers = [bus.ModbusDriver(bus.device(m, gateway_end, baudrate)) for m in bus.machines(units)]
    for driver in drivers:
        await driver.connect()
    STAMPS.clear()
    started = time.monotonic()
    try:
        await asyncio.gather(*(bus.poll(d, started + seconds, bus.Tally(), baudrate)
                               for d in drivers))
    finally:
        for driver in drivers:
            await driver.close()
    return started


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    return (f"{name:<20} mean {1000 * statistics.fmean(ordered):6.3f} ms  "
            f"p50 {1000 * ordered[len(ordered) // 2]:6.3f}  "
            f"p90 {1000 * ordered[int(len(ordered) * 0.9)]:6.3f}")


def report(gateway: dict[str, list[float]], sim: dict[str, list[float]], started: float,
           cpu: float) -> list[str]:
    first = next(i for i, t in enumerate(sim["arrived"]) if t >= started)
    arrived, sent, wire = (sim[k][first:] for k in ("arrived", "sent", "wire"))
    written, read = gateway["written"], gateway["read"]
    n = min(len(arrived), len(sent), len(written), len(read)) - 1
    if len(read) != len(written):
        return [f"error: {len(read)} reads for {len(written)} writes (answers in pieces)"]
    per = [written[i + 1] - written[i] for i in range(n)]
    return [f"{n} exchanges, gateway CPU {1000 * cpu / n:.3f} ms per exchange",
            summary("exchange", per), summary("wire time", wire[:n]),
            summary("gateway turnaround", [written[i + 1] - read[i] for i in range(n)]),
            summary("hop in", [arrived[i] - written[i] for i in range(n)]),
            summary("pacing error", [sent[i] - arrived[i] - wire[i] for i in range(n)]),
            summary("hop out", [read[i] - sent[i] for i in range(n)])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.modbus_bus_trace", description=__doc__)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", nargs=2, metavar=("PTY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        plc_end, out = args.serve
        asyncio.run(serve(plc_end, args.units, args.baudrate))
        Path(out).write_text(json.dumps(STAMPS))
        return 0
    stamp_gateway()
    with tempfile.TemporaryDirectory() as folder:
        relay, gateway_end, plc_end = bus.pty_pair(Path(folder))
        out = os.path.join(folder, "simulator.json")
        child = subprocess.Popen([sys.executable, "-m", "bench.modbus_bus_trace", "--serve",
                                  plc_end, out, "--units", str(args.units), "--baudrate",
                                  str(args.baudrate)], stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise SystemExit("error: the simulator process did not start")
            cpu = time.process_time()
            started = asyncio.run(poll_all(gateway_end, args.units, args.baudrate, args.seconds))
            cpu = time.process_time() - cpu
        finally:
            child.terminate()
            child.wait(10)
            relay.terminate()
            relay.wait(5)
        sim = json.loads(Path(out).read_text())
    print("\n".join(report(STAMPS, sim, started, cpu)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
