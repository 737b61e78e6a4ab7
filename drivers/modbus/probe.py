"""`gateway probe`: which unit ids answer and which register ranges exist behind a Modbus TCP
address or serial line; with `--config`, which byte/word order makes each configured
multi-register tag plausible, as a config diff.

The planning (range scan, order ranking) is pure, in probing.py; this module does the reads,
over the same checked link the driver uses (link.py), bounded by a per-request timeout, a total
time budget and a request cap.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from drivers.modbus.answers import Expected
from drivers.modbus.config import ModbusConnection, ModbusDeviceConfig, ModbusTag
from drivers.modbus.framing import quiet_pymodbus
from drivers.modbus.link import BadAnswer, ModbusLink
from drivers.modbus.planner import BIT_TABLES, MAX_BITS, MAX_REGISTERS
from drivers.modbus.probing import (
    OrderScore,
    Outcome,
    ScanResult,
    decided,
    parse_span,
    rank_orders,
    scan_ranges,
)
from gateway.errors import ConfigError, DeviceUnreachable
from gateway.units import parse_duration

EXIT_FAILED = 2
TABLES = ("holding", "input", "coil", "discrete")
_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers",
           "coil": "read_coils", "discrete": "read_discrete_inputs"}
_EXCEPTION_OUTCOME = {1: Outcome.UNSUPPORTED, 2: Outcome.MISSING, 3: Outcome.TOO_LONG}
_ABSENT = (10, 11)  # a gateway's "path unavailable", "target did not respond": no such unit
SKELETON_TAGS = 4  # registers per range in the printed `tags:` skeleton
_DEVICE = "probe"


class ProbeError(Exception):
    """The probe cannot run; the message is one line that says why."""


class BudgetExhausted(Exception):
    """The time budget or the request cap is used up."""


@dataclass
class Answer:
    outcome: Outcome
    values: list[Any] = field(default_factory=list)
    code: int | None = None  # the exception code, or None
    answered: bool = True  # False: a timeout or a broken answer


class Prober:
    """Bounded reads over one link."""

    def __init__(self, connection: ModbusConnection, budget: float, max_requests: int) -> None:
        self.connection = connection
        self.link = ModbusLink(connection.link_key(), connection, dead_after=None)
        self.link.users[_DEVICE] = connection.unit_id
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.max_requests = max_requests
        self.requests = 0

    async def open(self) -> None:
        try:
            await self.link.connect(_DEVICE)
        except DeviceUnreachable as exc:
            raise ProbeError(str(exc)) from None

    def close(self) -> None:
        self.link.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def read(self, unit: int, table: str, start: int, count: int) -> Answer:
        if self.requests >= self.max_requests or time.monotonic() >= self.deadline:
            raise BudgetExhausted
        self.requests += 1
        if not self.link.up:
            await self.open()  # the server closed the connection: once more, or give up
        expected = Expected(_FUNCTION[table], start, count)
        try:
            answer = await self.link.call(_DEVICE, unit, self.connection.timeout, expected,
                                          _METHOD[table], start, count=count)
        except (BadAnswer, DeviceUnreachable):
            return Answer(Outcome.FAILED, answered=False)
        if answer.isError():
            code = int(getattr(answer, "exception_code", 0))
            return Answer(_EXCEPTION_OUTCOME.get(code, Outcome.FAILED), code=code)
        values = answer.bits if table in BIT_TABLES else answer.registers
        return Answer(Outcome.OK, list(values)[:count])


# --- scanning units and ranges ------------------------------------------------------------


@dataclass
class UnitMap:
    unit: int
    tables: dict[str, ScanResult] = field(default_factory=dict)


async def find_units(prober: Prober, units: range, table: str, address: int,
                     found: list[int]) -> None:
    """Append the unit ids that answer a one-register read (data or an exception of their
    own) to `found`, as they answer (a budget that runs out keeps what was found)."""
    for unit in units:
        answer = await prober.read(unit, table, address, 1)
        if answer.answered and answer.code not in _ABSENT:
            found.append(unit)


async def scan_table(prober: Prober, unit: int, table: str, first: int, last: int) -> ScanResult:
    block = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
    scan = scan_ranges(first, last + 1, block=block)
    try:
        request = next(scan)
        while True:
            answer = await prober.read(unit, table, request.start, request.count)
            request = scan.send(answer.outcome)
    except StopIteration as stop:
        result: ScanResult = stop.value
        return result


async def probe_map(prober: Prober, units: range, tables: Sequence[str], first: int,
                    last: int) -> tuple[list[UnitMap], bool]:
    """(what answers, whether the budget ran out before the end)."""
    found: list[int] = []
    maps: list[UnitMap] = []
    try:
        await find_units(prober, units, tables[0], first, found)
        for unit in found:
            maps.append(UnitMap(unit))
            for table in tables:
                maps[-1].tables[table] = await scan_table(prober, unit, table, first, last)
    except BudgetExhausted:
        scanned = {m.unit for m in maps}
        return maps + [UnitMap(u) for u in found if u not in scanned], True
    return maps, False


def render_map(maps: list[UnitMap], where: str, connection: dict[str, Any],
               exhausted: bool, requests: int, seconds: float) -> str:
    """The map and a `devices:` skeleton, as YAML (the map is YAML too)."""
    lines = [f"# gateway probe {where}: {len(maps)} unit(s) answer; {requests} requests in "
             f"{seconds:.1f} s"]
    if exhausted:
        lines.append("# the budget ran out: the map is partial (raise --budget or narrow "
                     "--units/--range)")
    lines.append("units:" if maps else "units: {}")
    for unit_map in maps:
        lines.append(f"  {unit_map.unit}:")
        for table, result in unit_map.tables.items():
            lines.append(f"    {table}: {_ranges_text(result)}")
    if maps:
        lines += ["# a skeleton to edit: names, types and orders are guesses", "devices:"]
        for unit_map in maps:
            lines += _skeleton(unit_map, connection)
    return "\n".join(lines)


def _ranges_text(result: ScanResult) -> str:
    if result.unsupported:
        return "none  # exception 1: no such table"
    text = "[" + ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in result.ranges) + "]"
    if result.failed:
        text += f"  # {len(result.failed)} block(s) did not answer clearly"
    return text


def _skeleton(unit_map: UnitMap, connection: dict[str, Any]) -> list[str]:
    fields = ", ".join(f"{k}: {v}" for k, v in {**connection, "unit_id": unit_map.unit}.items())
    lines = [f"  - name: unit-{unit_map.unit}", "    driver: modbus",
             f"    connection: {{{fields}}}", "    tags:"]
    for table, result in unit_map.tables.items():
        for first, last in result.ranges:
            for address in range(first, min(last, first + SKELETON_TAGS - 1) + 1):
                data_type = "bool" if table in BIT_TABLES else "uint16"
                lines.append(f"      - {{name: {table}_{address}, table: {table}, "
                             f"address: {address}, type: {data_type}}}")
    if lines[-1] == "    tags:":
        lines[-1] = "    tags: []  # nothing readable found"
    return lines


# --- byte/word orders of configured tags --------------------------------------------------


@dataclass
class TagVerdict:
    device: ModbusDeviceConfig
    index: int  # in the device's tags
    tag: ModbusTag
    scores: list[OrderScore]
    error: str | None = None

    @property
    def configured(self) -> OrderScore | None:
        wanted = (self.tag.byte_order, self.tag.word_order)
        return next((s for s in self.scores if s.order == wanted), None)

    @property
    def change(self) -> bool:
        best, current = (self.scores[0] if self.scores else None), self.configured
        return (best is not None and current is not None and decided(self.scores)
                and best.order != current.order and best.key < current.key)


def probed_tags(device: ModbusDeviceConfig) -> list[tuple[int, ModbusTag]]:
    return [(i, t) for i, t in enumerate(device.tags) if t.size >= 2
            and t.table not in BIT_TABLES and t.type not in ("string", "bool")]


async def probe_orders(prober: Prober, device: ModbusDeviceConfig, reads: int,
                       spacing: float) -> list[TagVerdict]:
    tags = probed_tags(device)
    samples: dict[int, list[list[int]]] = {i: [] for i, _ in tags}
    errors: dict[int, str] = {}
    for round_number in range(reads):
        if round_number:
            await asyncio.sleep(spacing)
        for index, tag in tags:
            answer = await prober.read(device.connection.unit_id, tag.table, tag.address,
                                       tag.size)
            if answer.outcome is Outcome.OK:
                samples[index].append(answer.values)
            else:
                errors[index] = _failure(answer)
    verdicts = []
    for index, tag in tags:
        scores = rank_orders(samples[index], tag.type, scale=tag.scale, offset=tag.offset,
                             low=tag.min, high=tag.max) if samples[index] else []
        verdicts.append(TagVerdict(device, index, tag, scores,
                                   None if samples[index] else errors.get(index)))
    return verdicts


def _failure(answer: Answer) -> str:
    if not answer.answered:
        return "no answer"
    return f"modbus exception {answer.code}"


def render_orders(verdicts: list[TagVerdict], source: str, text: str) -> str:
    lines = [f"# gateway probe --config {source}: {len(verdicts)} multi-register tag(s)"]
    device = None
    for verdict in verdicts:
        if verdict.device is not device:
            device = verdict.device
            lines.append(f"{device.name} (unit {device.connection.unit_id}):")
        lines.append("  " + _verdict_line(verdict))
    changes = [v for v in verdicts if v.change]
    lines.append(f"# {len(changes)} tag(s) read better in another order"
                 + (": a config diff" if changes else ""))
    if changes:
        lines += [f"--- {source}", f"+++ {source} (probed orders)"]
        for verdict in changes:
            lines += _diff(verdict, text)
    return "\n".join(lines)


def _verdict_line(verdict: TagVerdict) -> str:
    tag = verdict.tag
    head = f"{tag.name} ({tag.type} {tag.table} {tag.address}):"
    if not verdict.scores:
        return f"{head} cannot read it ({verdict.error})"
    current, best = verdict.configured, verdict.scores[0]
    assert current is not None
    now = (f"configured {_order(current)} reads {_values(current)}"
           + (f" ({', '.join(current.problems)})" if current.problems else ""))
    if not decided(verdict.scores):
        return f"{head} {now}; undecided: the reads look alike in every order (read it " \
               f"again while it moves)"
    if not verdict.change:
        return f"{head} {now}; plausible: as configured"
    return f"{head} {now}; plausible: {_order(best)} reads {_values(best)}"


def _order(score: OrderScore) -> str:
    return f"byte_order {score.byte_order}, word_order {score.word_order}"


def _values(score: OrderScore) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in score.values)


def _diff(verdict: TagVerdict, text: str) -> list[str]:
    """The tag's line in the file with the probed orders (a flow mapping `{...}`), or the keys
    to set when the tag is written as a block."""
    best, tag = verdict.scores[0], verdict.tag
    where = f"@@ devices: {verdict.device.name}, tags[{verdict.index}] {tag.name} @@"
    line = _tag_line(text, verdict.device.name, tag.name)
    if line is not None and "{" in line and line.rstrip().endswith("}"):
        new = _with_key(_with_key(line, "byte_order", best.byte_order), "word_order",
                        best.word_order)
        return [where, f"-{line}", f"+{new}"]
    return [where, f"+  byte_order: {best.byte_order}", f"+  word_order: {best.word_order}"]


def _tag_line(text: str, device: str, tag: str) -> str | None:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.search(rf"\bname:\s*['\"]?{re.escape(device)}['\"]?\s*$", line)), None)
    if start is None:
        return None
    pattern = re.compile(rf"\bname:\s*['\"]?{re.escape(tag)}['\"]?\s*[,}}]")
    return next((line for line in lines[start + 1:] if pattern.search(line)), None)


def _with_key(line: str, key: str, value: str) -> str:
    if re.search(rf"\b{key}:\s*\w+", line):
        return re.sub(rf"\b{key}:\s*\w+", f"{key}: {value}", line)
    head, _, _ = line.rstrip().rpartition("}")
    return f"{head}, {key}: {value}}}"


# --- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", help="modbus://HOST[:PORT] (Modbus TCP, port 502)")
    parser.add_argument("--serial", help="probe a serial line (RTU) instead, e.g. /dev/ttyUSB0")
    parser.add_argument("--baudrate", type=int, default=9600)
    parser.add_argument("--parity", choices=("N", "E", "O"), default="N")
    parser.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    parser.add_argument("--framer", choices=("socket", "rtu"), default=None,
                        help="rtu with a URL: RTU over TCP (a serial gateway)")
    parser.add_argument("--units", default="1-247", help="unit ids to try (default 1-247)")
    parser.add_argument("--tables", default="holding,input",
                        help="comma-separated: holding, input, coil, discrete")
    parser.add_argument("--range", default="0-9999", dest="span",
                        help="addresses to scan (default 0-9999)")
    parser.add_argument("--timeout", default="300ms", help="per request (default 300ms)")
    parser.add_argument("--budget", default="120s", help="total time (default 120s)")
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--config", help="rank the byte/word orders of this config's tags")
    parser.add_argument("--device", action="append", default=[],
                        help="with --config: only this device (repeatable)")
    parser.add_argument("--reads", type=int, default=3,
                        help="with --config: reads of each tag (default 3)")


def run(args: argparse.Namespace) -> int:
    quiet_pymodbus()
    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # the probe says what failed
    try:
        text = _read(args.config) if args.config else ""
        return asyncio.run(_run(args, text))
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}") from None


async def _run(args: argparse.Namespace, config_text: str) -> int:
    timeout, budget = _duration(args.timeout, "--timeout"), _duration(args.budget, "--budget")
    if args.config:
        return await _run_orders(args, budget, config_text)
    connection, shown = _connection(args, timeout)
    tables = _tables(args.tables)
    first_unit, last_unit = _span(args.units, 0, 255, "--units")
    first, last = _span(args.span, 0, 65535, "--range")
    prober = Prober(connection, budget, args.max_requests)
    await prober.open()
    try:
        maps, exhausted = await probe_map(prober, range(first_unit, last_unit + 1), tables,
                                          first, last)
    finally:
        prober.close()
    where = args.url or args.serial
    print(render_map(maps, where, shown, exhausted, prober.requests, prober.elapsed))
    return 0 if maps else EXIT_FAILED


async def _run_orders(args: argparse.Namespace, budget: float, text: str) -> int:
    """Each device's tags over its own connection settings (and its own timeout)."""
    from gateway.config import parse_config

    try:
        config = parse_config(text, args.config)
    except ConfigError as exc:
        raise ProbeError(exc.render().replace("\n", "; ")) from None
    devices = [d for d in config.devices if isinstance(d, ModbusDeviceConfig)
               and (not args.device or d.name in args.device)]
    if not devices:
        named = f" named {', '.join(args.device)}" if args.device else ""
        raise ProbeError(f"no Modbus device{named} in {args.config}")
    verdicts: list[TagVerdict] = []
    probers: dict[tuple[str, ...], Prober] = {}
    try:
        for device in devices:
            key = device.connection.link_key()
            if key not in probers:
                probers[key] = Prober(device.connection, budget, args.max_requests)
                await probers[key].open()
            verdicts += await probe_orders(probers[key], device, max(1, args.reads), 0.3)
    except BudgetExhausted:
        raise ProbeError("the budget ran out (raise --budget)") from None
    finally:
        for prober in probers.values():
            prober.close()
    print(render_orders(verdicts, args.config, text))
    return 0


def _connection(args: argparse.Namespace, timeout: float) -> tuple[ModbusConnection,
                                                                   dict[str, Any]]:
    """The link to probe, and its keys as a config's `connection:` writes them."""
    if (args.url is None) == (args.serial is None):
        raise ProbeError("give modbus://HOST:PORT or --serial DEVICE (one of them)")
    if args.url is not None:
        parts = urlsplit(args.url)
        try:
            port = parts.port or 502
        except ValueError:
            raise ProbeError(f"bad port in {args.url!r}") from None
        if parts.scheme != "modbus" or not parts.hostname:
            raise ProbeError(f"want modbus://HOST[:PORT], not {args.url!r}")
        shown: dict[str, Any] = {"host": parts.hostname, "port": port}
    else:
        shown = {"serial": args.serial, "baudrate": args.baudrate, "parity": args.parity,
                 "stopbits": args.stopbits}
    if args.framer:
        shown["framer"] = args.framer
    try:
        return ModbusConnection.model_validate({**shown, "timeout": timeout}), shown
    except ValidationError as exc:
        raise ProbeError(exc.errors()[0]["msg"]) from None


def _tables(text: str) -> list[str]:
    tables = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise ProbeError(f"--tables wants some of {', '.join(TABLES)}, not {text!r}")
    return tables


def _span(text: str, lowest: int, highest: int, what: str) -> tuple[int, int]:
    try:
        return parse_span(text, lowest, highest, what)
    except ValueError as exc:
        raise ProbeError(str(exc)) from None


def _duration(text: str, what: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ProbeError(f"{what}: {exc}") from None
    if seconds <= 0:
        raise ProbeError(f"{what} must be positive")
    return seconds
