"""Bench-only data sources, each in its own process so that the gateway and the harness do not
share its CPU time: `python -m bench.sources modbus|opcua --port P --report FILE`.

On SIGUSR1 a source writes what it counted (JSON) to FILE: the Modbus simulator its requests per
unit id, the OPC UA source the value changes it emitted. Both stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OPCUA_NS = "urn:shopfloor:bench"


async def _modbus(args: argparse.Namespace) -> None:
    from simulators.modbus import ModbusSimulator

    simulator = ModbusSimulator(port=args.port, tick=1.0)
    async with simulator:
        extra = [await _listen_also(simulator) for _ in range(args.extra_ports)]
        ports = [args.port] + [server.transport.sockets[0].getsockname()[1] for server in extra]
        ports_file = Path(args.report).with_suffix(".ports")
        ports_file.with_suffix(".tmp").write_text(json.dumps(ports))
        ports_file.with_suffix(".tmp").replace(ports_file)  # whole, once it exists
        def report() -> None:
            counts = {unit: simulator.request_count(unit) for unit in simulator.units}
            Path(args.report).write_text(json.dumps({"requests": counts}))
        try:
            await _serve(report)
        finally:
            for server in extra:
                await server.shutdown()


async def _listen_also(simulator: Any) -> Any:
    """The same simulated machines on another port (the OS picks it) as well: the gateway shares
    one connection per host:port, so a scenario of N connections (Neuron's 500 devices) needs
    N ports. Ports picked in advance by the harness collided with other processes' sockets."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext

    from simulators.modbus.server import _Datastore, _TcpServer

    placeholder = ModbusServerContext(devices={1: ModbusDeviceContext()}, single=False)
    server = _TcpServer(placeholder, address=("127.0.0.1", 0), framer=simulator.framer)
    server.simulator = simulator
    server.context = _Datastore(simulator)  # type: ignore[assignment]
    await server.serve_forever(background=True)
    return server


async def _opcua(args: argparse.Namespace) -> None:
    """`args.variables` Double variables `ns=<bench>;s=v<i>`, every one written every
    `args.period` seconds with a new value and the source timestamp of that write."""
    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(OPCUA_NS)
    ns = ua.Int16(idx)
    folder = await server.nodes.objects.add_object(ua.NodeId(ua.String("Bench"), ns), "Bench")
    nodes = [await folder.add_variable(ua.NodeId(ua.String(f"v{i}"), ns), f"v{i}", 0.0)
             for i in range(args.variables)]
    emitted = 0
    started = time.monotonic()

    async def change_forever() -> None:
        nonlocal emitted
        tick = 0
        next_at = time.monotonic()
        while True:
            tick += 1
            now = datetime.now(UTC)
            for i, node in enumerate(nodes):
                value = ua.DataValue(ua.Variant(float(tick * 1000 + i), ua.VariantType.Double),
                                     SourceTimestamp=now,  # type: ignore[arg-type]
                                     ServerTimestamp=now)  # type: ignore[arg-type]
                await server.write_attribute_value(node.nodeid, value)
            emitted += len(nodes)
            next_at += args.period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def report() -> None:
        Path(args.report).write_text(json.dumps(
            {"emitted": emitted, "seconds": time.monotonic() - started}))

    async with server:
        task = asyncio.create_task(change_forever())
        try:
            await _serve(report)
        finally:
            task.cancel()


async def _serve(report: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, report)  # type: ignore[arg-type]
    print("ready", flush=True)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sources", description=__doc__)
    parser.add_argument("kind", choices=("modbus", "opcua"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report", required=True, help="JSON counts go here on SIGUSR1")
    parser.add_argument("--extra-ports", type=int, default=0,
                        help="modbus: this many more ports serving the same machines (all the "
                        "ports go, as a JSON list, to the report file's name with .ports)")
    parser.add_argument("--variables", type=int, default=1000, help="opcua: changing variables")
    parser.add_argument("--period", type=float, default=0.1, help="opcua: seconds per change")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_modbus(args) if args.kind == "modbus" else _opcua(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
