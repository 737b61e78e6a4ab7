"""Command line: `gateway demo|run|check|reload|status|discover|probe|simulate|drill|schema`
(also `python -m gateway`). `gateway COMMAND --help` tells more about each."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

from drivers.base import Driver
from gateway import __version__
from gateway.config import (
    GatewayConfig,
    config_json_schema,
    config_secrets,
    load_config,
    load_config_with_lines,
)
from gateway.errors import ConfigError, ConfigProblem, GatewayError
from gateway.logs import configure_logging

EXIT_CONFIG = 2
log = logging.getLogger("gateway")


# Commands that need none of discover's, probe's, simulate's and drill's modules: their parser
# leaves those out, since building those arguments imports asyncua, aiohttp and the simulators
# (measured: `gateway run` of one Modbus device at 82 MiB RSS with them, 56 MiB without).
_LEAN_COMMANDS = frozenset({"run", "check", "reload", "status", "schema"})
_TOP_OPTIONS_WITH_VALUE = frozenset({"--log-level", "--log-format"})


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand of a command line: its first word that is not a top-level option."""
    words = iter(argv)
    for word in words:
        if word in _TOP_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    command = _command_word(sys.argv[1:] if argv is None else argv)
    args = _parser(lean=command in _LEAN_COMMANDS).parse_args(argv)
    args.redacting = configure_logging(args.log_level, args.log_format)
    try:
        return int(args.command(args))
    except ConfigError as exc:
        one = len(exc.problems) == 1
        print(f"{exc.source}: {exc.problems[0]}" if one else exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser(lean: bool = False) -> argparse.ArgumentParser:
    """Every command; `lean`: without the arguments of discover and probe and without simulate
    and drill (see _LEAN_COMMANDS)."""
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="json: one JSON object per line (for log shippers)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="poll the devices and publish until SIGTERM")
    run.add_argument("--config", "-c", required=True, help="YAML config file")
    run.add_argument("--live", action="store_true", help="show a live table of the values")
    run.set_defaults(command=_run)

    check = commands.add_parser("check", help="validate a config without touching any device")
    check.add_argument("--config", "-c", required=True, help="YAML config file")
    check.add_argument("--plan", action="store_true", help="print each device's read plan")
    check.add_argument("--writable", action="store_true",
                       help="list each writable tag with its limits; warn about unbounded ones")
    check.set_defaults(command=_check)

    reload = commands.add_parser("reload", help="make a running gateway re-read its config")
    reload.add_argument("--config", "-c", required=True, help="YAML config file")
    reload.set_defaults(command=_reload)

    status = commands.add_parser(
        "status", help="show the backlog per sink and the devices (reads the buffer)",
        description="Sinks (backlog, oldest unsent, dropped, unconfirmed) and devices, from the "
        "buffer file (read-only, safe beside a running gateway) and, if it answers, the running "
        "gateway's /api/status. Without --config: the last `gateway demo`'s buffer.")
    status.add_argument("--config", "-c", default=None,
                        help="YAML config file (default: the last demo's)")
    status.add_argument("--json", action="store_true",
                        help="print the sinks as a JSON list (backlog as `depth`)")
    status.set_defaults(command=_status)

    discover = commands.add_parser(
        "discover", help="browse an OPC UA server and print a device entry with its tags",
        description="Browse an OPC UA server and print a YAML device entry (paste it under "
        "`devices:`). Exit 2 when the server cannot be reached or refuses the session.")
    if not lean:
        _add_discover_arguments(discover)
    discover.set_defaults(command=_discover)

    probe = commands.add_parser(
        "probe", help="find the unit ids and register ranges of a Modbus device or bus",
        description="Scan unit ids and register ranges with exception-aware block reads and "
        "print what answers; with --config, rank each multi-register tag's byte/word orders "
        "and print a config diff. Exit 2 when nothing answers or the probe cannot run.")
    if not lean:
        _add_probe_arguments(probe)
    probe.set_defaults(command=_probe)

    schema = commands.add_parser("schema", help="print the config's JSON Schema")
    schema.add_argument("--markdown", action="store_true",
                        help="print the configuration reference (docs/configuration.md)")
    schema.set_defaults(command=_schema)

    demo = commands.add_parser("demo", help="simulators + embedded broker + gateway, one process")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--mqtt-port", type=int, default=1883,
                      help="embedded broker port on 127.0.0.1 (0, or 1883 taken: any free port)")
    demo.add_argument("--http-port", type=int, default=8080,
                      help="status page on 127.0.0.1 (0, or 8080 taken: any free port)")
    demo.add_argument("--modbus-port", type=int, default=0,
                      help="port of the Modbus simulator on 127.0.0.1 (0: any free port)")
    demo.add_argument("--opcua-port", type=int, default=0,
                      help="port of the OPC UA CNC simulator on 127.0.0.1 (0: any free port)")
    demo.add_argument("--influx-url", default=None,
                      help="also write to this InfluxDB (env GATEWAY_DEMO_INFLUX_URL)")
    demo.add_argument("--influx-api", default=None, choices=["v1", "v2"],
                      help="API of that InfluxDB (env GATEWAY_DEMO_INFLUX_API, default v2)")
    demo.add_argument("--sparkplug", action="store_true",
                      help="also publish Sparkplug B (group demo, edge node demo-gw) to the "
                      "embedded broker, for Ignition's MQTT Engine (docs/sparkplug.md)")
    demo.add_argument("--no-live", action="store_true", help="no live table, only logs")
    demo.add_argument("--device", default=None,
                      help="live table: only this device's tags (key d cycles through them)")
    demo.set_defaults(command=_demo)
    if not lean:
        _add_twin_commands(commands)
    return parser


def _add_twin_commands(commands: Any) -> None:
    from simulators.twin.cli import add_simulate_arguments, run_simulate
    from simulators.twin.drill_cli import add_drill_arguments, run_drill

    simulate = commands.add_parser("simulate", help="serve simulated twins of a config's devices")
    add_simulate_arguments(simulate)
    simulate.set_defaults(command=run_simulate)
    drill = commands.add_parser("drill", help="run the gateway against twins and inject faults")
    add_drill_arguments(drill)
    drill.set_defaults(command=run_drill)


def _add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    from drivers.opcua.discover import add_arguments

    add_arguments(parser)


def _discover(args: argparse.Namespace) -> int:
    from drivers.opcua.discover import run

    return run(args)


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    from drivers.modbus.probe import add_arguments

    add_arguments(parser)


def _probe(args: argparse.Namespace) -> int:
    from drivers.modbus.probe import run

    return run(args)


def _check(args: argparse.Namespace) -> int:
    """Everything `run` would refuse, without touching a device; a port in use now is only
    a warning (the running gateway this file is checked for may hold it)."""
    config, drivers, busy_ports = _checked_config(args.config)
    for problem in busy_ports:
        print(f"{args.config}: warning: {problem} (`gateway run` refuses to start until it "
              "is free)", file=sys.stderr)
    for problem in _modbus_address_warnings(config, args.config):
        print(f"{args.config}: warning: {problem}", file=sys.stderr)
    tags = sum(len(getattr(d, "tags", [])) for d in config.devices)
    sinks = list(config.sinks)
    print(f"{args.config}: OK: gateway {config.gateway.id}, {len(config.devices)} device(s), "
          f"{tags} tag(s), sinks: {', '.join(sinks)}")
    if args.plan:
        from drivers.modbus.busload import describe_buses

        for driver in drivers:
            print(driver.describe_plan())
        for line in describe_buses(config.devices):  # shared serial lines and TCP links
            print(line)
    if args.writable:
        _print_writable_surface(config, args.config)
    return 0


def _print_writable_surface(config: GatewayConfig, path: str) -> None:
    """`check --writable`: the tags commands may write, and unbounded ones as warnings."""
    from gateway.writable_surface import describe, warnings, writable_tags

    entries = writable_tags(config.devices)
    command_sinks = [name for name, sink in config.sinks.items()
                     if getattr(sink, "commands", False)]
    for line in describe(entries, command_sinks):
        print(line)
    for warning in warnings(entries):
        print(f"{path}: warning: {warning}", file=sys.stderr)


def _modbus_address_warnings(config: GatewayConfig, path: str) -> list[ConfigProblem]:
    """Modbus addresses that read like 1-based Modicon notation (valid, probably wrong)."""
    from drivers.modbus.config import ModbusDeviceConfig
    from drivers.modbus.guards import address_warnings
    from gateway.config import line_of

    lines = load_config_with_lines(path)[1]
    found = []
    for index, device in enumerate(config.devices):
        if isinstance(device, ModbusDeviceConfig):
            for warning in address_warnings(device):
                key = ("devices", index, "tags", warning.index, warning.key)
                dotted = f"devices[{index}].tags[{warning.index}].{warning.key}"
                found.append(ConfigProblem(dotted, warning.message, line_of(key, lines)))
    return found


def _checked_config(path: str) -> tuple[GatewayConfig, list[Driver], list[ConfigProblem]]:
    """The config, its enabled drivers and the ports in use; raises `ConfigError` for the
    rest of what would stop `run`: the file, the drivers, the buffer path, certificates."""
    from gateway.preflight import build_drivers_checked, preflight

    config, lines = load_config_with_lines(path)
    drivers, problems = build_drivers_checked(config, lines)
    found = preflight(config, lines)
    problems += found.errors
    if problems:
        raise ConfigError(sorted(problems, key=lambda problem: problem.line or 0), path)
    return config, drivers, found.busy_ports


def _status(args: argparse.Namespace) -> int:
    """Sinks and devices from the buffer (read-only) and, if it answers, the running gateway."""
    from pathlib import Path

    from gateway.buffer import buffer_report
    from gateway.demo import demo_home, read_demo_state
    from gateway.status_report import buffer_devices, format_status, running_status

    demo = read_demo_state()
    if args.config:
        config = load_config(args.config)
        path, listen = str(config.gateway.buffer.path), config.gateway.http.listen
        configured = [d.name for d in config.devices]
    elif demo is not None:
        path, listen, configured = demo["buffer"], demo["http"], list(demo.get("devices", []))
    else:
        print("gateway status needs --config FILE (the gateway's config); no demo has run "
              f"here either (its buffer would be in {demo_home()})", file=sys.stderr)
        return EXIT_CONFIG
    if not Path(path).is_file():
        hint = (f"; the demo's buffer is {demo['buffer']}: `gateway status` without --config "
                "shows it") if demo is not None and args.config else ""
        print(f"no buffer at {path} yet: a gateway creates it when it first runs with this "
              f"config{hint}", file=sys.stderr)
        return 1
    try:
        report = buffer_report(path)
        devices = buffer_devices(path)
    except sqlite3.Error as exc:
        print(f"cannot read the buffer {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    print("\n".join(format_status(path, report, devices, running_status(listen), listen,
                                   configured)))
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Ask the gateway listening where the file says to reload; prints what changed. The
    gateway reloads the file it was started with, and refuses (saying which one it runs)
    when that is not the file named here."""
    import urllib.parse
    import urllib.request
    from pathlib import Path

    config = load_config(args.config)
    named = urllib.parse.quote(str(Path(args.config).resolve()))
    url = f"http://{config.gateway.http.listen}/api/reload?config={named}"
    request = urllib.request.Request(url, method="POST")
    if (token := config.gateway.http.token) is not None:
        request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    try:
        result = _post_reload(request)
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        print(f"no gateway answers at http://{config.gateway.http.listen}/ ({reason}): is "
              f"`gateway run --config {args.config}` running?", file=sys.stderr)
        return 1
    except ValueError:
        print(f"http://{config.gateway.http.listen}/ answered, but not as a gateway: another "
              "program has that port (gateway.http.listen)", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    if not result.get("ok"):
        for error in result.get("errors", []):
            print(f"reload refused: {error}", file=sys.stderr)
    return 0 if result.get("ok") else 1


def _post_reload(request: Any) -> dict[str, Any]:
    """The gateway's JSON answer, also to a refused reload (4xx/5xx); `ValueError` when the
    body is not a gateway's (another program listens there)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        body = exc.read() or b"{}"
    result = json.loads(body)
    if not isinstance(result, dict):
        raise ValueError("not a JSON object")
    return result


def _schema(args: argparse.Namespace) -> int:
    if args.markdown:
        from gateway.reference import markdown_reference

        print(markdown_reference(config_json_schema(builtin_only=True)), end="")
    else:
        print(json.dumps(config_json_schema(), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    config, drivers, busy_ports = _checked_config(args.config)
    if busy_ports:  # before anything connects: a second gateway must not touch the broker
        raise ConfigError(busy_ports, args.config)
    args.redacting.secrets = sorted(config_secrets(config), key=len, reverse=True)
    try:
        return asyncio.run(_run_until_signal(config, args.config, args.live, drivers))
    except OSError as exc:  # the machine changed since the preflight (a port taken since)
        log.debug("start failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _run_until_signal(config: GatewayConfig, path: str, live: bool = False,
                            drivers: list[Driver] | None = None) -> int:
    from gateway.runtime import Gateway
    from gateway.signals import stop_on_signals

    stop = stop_on_signals()
    gateway = Gateway(config, config_path=path, drivers=drivers)
    reloads: set[asyncio.Task[Any]] = set()

    def reload() -> None:
        task = asyncio.create_task(gateway.reload_from_file())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    # The cyclic GC took a fifth of the gateway's CPU at 40,000 readings/s (measured with
    # gc.callbacks). The config, the read plans and the libraries (about 110,000 objects with
    # 10,000 tags) live as long as the process: frozen, full collections no longer walk them.
    # A reading lives from its poll to its last sink's ack (0.1-0.3 s): at the default young
    # threshold (700 net new objects) nearly every one was walked on its way to the old
    # generation; at 50,000 they are freed by reference counting first. Cyclic garbage waits
    # for at most 50,000 net new objects.
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    if not live:
        await gateway.run(stop)
    else:
        from gateway.live import live_view

        async with asyncio.TaskGroup() as group:
            view = group.create_task(live_view(gateway.state, stop))
            await gateway.run(stop)
            view.cancel()
    log.info("stopped cleanly")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import TEARDOWN_WATCHDOG, run_demo

    try:
        return asyncio.run(run_demo(args))  # asyncio.run's own cleanup is watched too
    finally:
        TEARDOWN_WATCHDOG.disarm()
