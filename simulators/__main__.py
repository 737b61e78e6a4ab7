"""`python -m simulators`: simulated machines on real protocol ports until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.units import parse_duration

if TYPE_CHECKING:
    from simulators.opcua.security import SimulatorSecurity


class _DefaultsShown(argparse.HelpFormatter):
    """`(default: X)` after each option's help, except where there is no default to tell."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or action.default is False or action.default == []
                or action.default == argparse.SUPPRESS or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def _parser() -> argparse.ArgumentParser:
    """Common flags, then one argument group per protocol."""
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__,
                                     formatter_class=_DefaultsShown)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (TCP)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same values")
    parser.add_argument("--tick", default="100ms", help="model update period")
    parser.add_argument("--list", action="store_true", help="print the register map and exit")
    modbus = parser.add_argument_group("Modbus")
    modbus.add_argument("--modbus-port", type=int, default=5020,
                        help="Modbus TCP port (0: any free port)")
    modbus.add_argument("--modbus-serial", "--serial", dest="serial", default=None,
                        metavar="DEVICE",
                        help="serve Modbus RTU on this serial device instead of TCP; 'pty': on "
                        "a pseudo-terminal of its own (its /dev/pts path is printed), no socat")
    modbus.add_argument("--baudrate", type=int, default=19200, help="RTU: bits per second")
    modbus.add_argument("--parity", choices=("N", "E", "O"), default="N",
                        help="RTU: none, even, odd")
    modbus.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="RTU")
    modbus.add_argument("--framer", choices=("socket", "rtu"), default="socket",
                        help="TCP framing: socket (Modbus TCP) or rtu (RTU over TCP, as a "
                        "serial gateway in transparent mode)")
    modbus.add_argument("--max-connections", type=int, default=None, metavar="N",
                        help="TCP clients served at once (1: a serial gateway); more are closed")
    opcua = parser.add_argument_group("OPC UA")
    opcua.add_argument("--opcua-port", type=int, default=None,
                       help="also serve the CNC on opc.tcp://HOST:PORT/ (0: any free port; "
                       "default: no OPC UA server)")
    opcua.add_argument("--opcua-secure", action="store_true",
                       help="offer only signed and encrypted endpoints (Basic256Sha256 and the "
                       "Aes policies); prints the certificate's fingerprint to pin")
    opcua.add_argument("--opcua-user", action="append", default=[], metavar="USER:PASSWORD",
                       help="accept this login (repeatable); anonymous is refused once given")
    opcua.add_argument("--opcua-pki", default="./data/simulator-pki",
                       help="folder of the simulator's certificate (made on first start)")
    return parser


def _opcua_security(args: argparse.Namespace) -> SimulatorSecurity | None:
    """The secured CNC's settings from the flags, or None for an open server."""
    from simulators.opcua.security import SimulatorSecurity

    users = dict(_user(text) for text in args.opcua_user)
    if not args.opcua_secure and not users:
        return None
    return SimulatorSecurity(pki=Path(args.opcua_pki), users=users,
                             allow_none=not args.opcua_secure)


def _user(text: str) -> tuple[str, str]:
    name, colon, password = text.partition(":")
    if not name or not colon:
        raise SystemExit(f"--opcua-user wants USER:PASSWORD, not {text!r}")
    return name, password


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    if args.list:
        from importlib.resources import files

        print(files("simulators.modbus").joinpath("register_map.yaml").read_text())
        return 0
    problem = _port_problem(args)
    if problem is not None:  # one line, before anything listens (not a bind traceback)
        print(f"simulators: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))


def _port_problem(args: argparse.Namespace) -> str | None:
    from gateway.preflight import port_problem

    ports = [] if args.serial else [(args.modbus_port, "--modbus-port")]
    if args.opcua_port is not None:
        ports.append((args.opcua_port, "--opcua-port"))
    for port, option in ports:
        problem = port_problem(args.host, port, option)
        if problem is not None:
            return problem.replace(f"e.g. {args.host}:", "e.g. ")
    return None


async def _serve(args: argparse.Namespace) -> int:
    from simulators.modbus import ModbusSimulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    simulator = ModbusSimulator(host=args.host, port=args.modbus_port, seed=args.seed,
                                tick=parse_duration(args.tick), serial_port=args.serial,
                                baudrate=args.baudrate, parity=args.parity,
                                stopbits=args.stopbits, framer=args.framer,
                                max_connections=args.max_connections)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(simulator)
        where = simulator.serial_path or f"{args.host}:{simulator.port}"
        print(f"modbus simulator: units {sorted(simulator.units)} on {where}", flush=True)
        if args.opcua_port is not None:
            from simulators.opcua import OpcUaSimulator

            security = _opcua_security(args)
            cnc = await stack.enter_async_context(OpcUaSimulator(
                host=args.host, port=args.opcua_port, seed=args.seed,
                tick=parse_duration(args.tick), security=security))
            print(f"opcua simulator: CNC (namespace urn:shopfloor:cnc) on {cnc.endpoint}",
                  flush=True)
            if security is not None:
                print(f"opcua simulator: certificate {security.certificate_path} "
                      f"(SHA-256 {security.fingerprint()}), users {sorted(security.users)}",
                      flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
