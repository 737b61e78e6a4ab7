"""A Modbus TCP/RTU server (pymodbus 3.16) over the machine models, with fault switches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
)
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from simulators.modbus.encoding import FORMATS, from_registers, to_registers
from simulators.modbus.limits import READ_BITS, READ_REGISTERS, quantity_refused
from simulators.modbus.machines import SETPOINTS, Machine, load_machines
from simulators.modbus.pacing import sleep_until, wire_seconds
from simulators.modbus.pty import PTY, PTY_MASTER, PtyError, claim_slave
from simulators.modbus.schedule import Schedule
from simulators.ports import free_port

log = logging.getLogger(__name__)
TABLE_SIZE = 256
FUNCTION_TABLES = {1: "coil", 2: "discrete", 3: "holding", 4: "input", 5: "coil", 6: "holding",
                   15: "coil", 16: "holding", 22: "holding", 23: "holding"}
SEQUENCE_TAG = "poll_sequence"
FAULT_KINDS = ("none", "silent", "delay", "exception", "drop", "short")


@dataclass(frozen=True)
class Fault:
    kind: str = "none"
    seconds: float = 0.0
    code: int = 4


class _AnyQuantity(ModbusPDU):
    """A request decoded whatever its quantity (0 too): `_answer` refuses it with exception 3
    (limits.py), where pymodbus's own decoder answers exception 1."""

    def verifyCount(self, max_count: int, count: int = -1) -> None:
        """Checked when answering, not when decoding."""


class _AnyReadCoils(_AnyQuantity, ReadCoilsRequest):
    pass


class _AnyReadDiscrete(_AnyQuantity, ReadDiscreteInputsRequest):
    pass


class _AnyReadHolding(_AnyQuantity, ReadHoldingRegistersRequest):
    pass


class _AnyReadInput(_AnyQuantity, ReadInputRegistersRequest):
    pass


class _AnyWriteCoils(_AnyQuantity, WriteMultipleCoilsRequest):
    pass


ANY_QUANTITY = [_AnyReadCoils, _AnyReadDiscrete, _AnyReadHolding, _AnyReadInput, _AnyWriteCoils]


def empty_tables(size: int = TABLE_SIZE) -> dict[str, list[Any]]:
    """A unit's four Modbus tables of `size` addresses, every one zero (registers) or off
    (bits)."""
    return {"holding": [0] * size, "input": [0] * size,
            "coil": [False] * size, "discrete": [False] * size}


class _Unit:
    """One machine's four tables, filled from its model through the register map."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.tables = empty_tables()
        self.sequence = 0
        self.sequence_tag = next((t for t in machine.tags if t["name"] == SEQUENCE_TAG), None)

    def store(self, values: dict[str, Any]) -> None:
        for tag in self.machine.tags:
            if tag["name"] in values:
                self.write_tag(tag, values[tag["name"]])

    def write_tag(self, tag: dict[str, Any], value: Any) -> None:
        table = self.tables[tag["table"]]
        if tag["table"] in ("coil", "discrete"):
            table[tag["address"]] = bool(value)
            return
        if tag.get("bit") is not None:
            return  # bits live in their status word, written as a whole
        scale, offset = tag.get("scale", 1.0), tag.get("offset", 0.0)
        if scale != 1 or offset != 0:
            value = round((value - offset) / scale)
        registers = to_registers(value, tag["type"], tag.get("byte_order", "big"),
                                 tag.get("word_order", "big"), tag.get("length"))
        table[tag["address"]:tag["address"] + len(registers)] = registers

    def take_setpoints(self) -> None:
        """After a client write: the machine follows what is now in its setpoint registers
        (decoded as the register map types them, scale and offset applied)."""
        for tag in self.machine.tags:
            if tag["name"] in SETPOINTS.get(self.machine.kind, {}):
                self.machine.setpoints[tag["name"]] = self.read_tag(tag)

    def read_tag(self, tag: dict[str, Any]) -> int | float:
        """A numeric register tag's engineering value, as the table holds it now."""
        size = struct.calcsize(FORMATS[tag["type"]]) // 2
        registers = self.tables[tag["table"]][tag["address"]:tag["address"] + size]
        value = from_registers(registers, tag["type"], tag.get("byte_order", "big"),
                               tag.get("word_order", "big"))
        scale, offset = tag.get("scale", 1.0), tag.get("offset", 0.0)
        return value * scale + offset if scale != 1 or offset != 0 else value

    def next_sequence(self, table: str, address: int, count: int) -> None:
        """`poll_sequence` counts the reads that cover it: consecutive polls see n, n+1, ..."""
        tag = self.sequence_tag
        if tag and tag["table"] == table and address <= tag["address"] < address + count:
            self.sequence += 1
            self.write_tag(tag, self.sequence)


class _Datastore:
    """What pymodbus's request handler calls for every request (duck-typed server context)."""

    def __init__(self, simulator: ModbusSimulator) -> None:
        self.simulator = simulator

    def device_ids(self) -> list[int]:
        return list(self.simulator.units)

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[Any] | ExcCodes:
        unit = self._unit(device_id)
        table = FUNCTION_TABLES[func_code]
        if address + count > TABLE_SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        unit.next_sequence(table, address, count)
        values = list(unit.tables[table][address:address + count])
        if self.simulator.fault_of(device_id).kind == "short":
            values = values[:max(0, count - 1 if table in ("holding", "input") else count - 8)]
        return values

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[Any]) -> ExcCodes | None:
        unit = self._unit(device_id)
        table = FUNCTION_TABLES[func_code]
        if address + len(values) > TABLE_SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        unit.tables[table][address:address + len(values)] = values
        unit.take_setpoints()
        return None

    def _unit(self, device_id: int) -> _Unit:
        if device_id not in self.simulator.units:
            raise NoSuchIdException(f"no unit {device_id}")
        return self.simulator.units[device_id]


class _RequestHandler(ServerRequestHandler):
    """pymodbus's per-connection handler, with the fault switches, answering each request from
    the request itself.

    pymodbus 3.16's own `handle_request` re-reads `self.last_pdu` after awaiting the datastore:
    a delayed answer then goes out with the transaction id and unit of whatever request arrived
    meanwhile (measured: unit 1's late value answered as unit 2's), or is lost to an
    AttributeError if a partial frame arrived. Taking the request as it is decoded keeps delayed
    answers correct, and lets a request go unanswered or close only its own connection.
    """

    simulator: ModbusSimulator

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        # The request's last byte is here now, not when the answering task first runs (a
        # loop turn later): pacing from then would put this simulator's own latency on the line.
        arrived = time.monotonic()
        used = super().callback_data(data, addr)
        if self.last_pdu is not None:
            self.simulator.spawn(self._answer(self.last_pdu, self.last_addr, arrived))
        return used

    def handle_later(self) -> None:
        """pymodbus schedules this for every decoded request: answered in `callback_data`."""

    def callback_connected(self) -> None:
        """Count the connection; one over `max_connections` is closed at once, as a serial
        gateway that takes one TCP client does."""
        super().callback_connected()
        simulator = self.simulator
        limit = simulator.max_connections
        if limit is not None and len(self.server.active_connections) > limit:
            simulator.refused += 1
            self.loop.call_soon(self.close)
            return
        simulator.connections += 1

    async def _answer(self, request: ModbusPDU, addr: tuple[Any, ...] | None,
                      arrived: float) -> None:
        simulator, device_id = self.simulator, request.dev_id
        simulator.requests[device_id] += 1
        simulator.arrivals.append((arrived, device_id))
        fault = simulator.fault_of(device_id)
        if device_id not in simulator.units and simulator.framer == FramerType.RTU:
            return  # nobody on the line has that address (a TCP server answers exception 11)
        if fault.kind == "silent" or (fault.kind == "drop" and simulator.serial_port):
            return  # a serial line has no connection to drop: it just stays quiet
        if fault.kind == "drop":
            self.close()
            return
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if simulator.pace_baudrate:
            # The answer's last byte leaves the line at arrival + both frames' wire time.
            count = getattr(request, "count", 1) or 1
            await sleep_until(arrived + wire_seconds(request.function_code, count,
                                                     simulator.pace_baudrate))
        response = await self._response(request, fault)
        response.transaction_id, response.dev_id = request.transaction_id, device_id
        if self.transport is not None:  # the client may have gone while we waited
            self.server_send(response, addr)

    async def _response(self, request: ModbusPDU, fault: Fault) -> ModbusPDU:
        if fault.kind == "exception":
            return ExceptionResponse(request.function_code, fault.code)
        simulator = self.simulator
        count = getattr(request, "count", None)
        if count is not None and quantity_refused(request.function_code, count,
                                                  simulator.max_read_registers,
                                                  simulator.max_read_bits):
            simulator.refused_quantities += 1
            return ExceptionResponse(request.function_code, ExcCodes.ILLEGAL_VALUE)
        try:
            return await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            return ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:
            log.exception("modbus simulator: cannot answer %s", request)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)


def _handler(server: ModbusTcpServer | ModbusSerialServer,
             simulator: ModbusSimulator) -> _RequestHandler:
    handler = _RequestHandler(server, server.trace_packet, server.trace_pdu,
                              server.trace_connect)
    handler.simulator = simulator
    return handler


class _TcpServer(ModbusTcpServer):
    simulator: ModbusSimulator

    def callback_new_connection(self) -> _RequestHandler:
        return _handler(self, self.simulator)


class _SerialServer(ModbusSerialServer):
    simulator: ModbusSimulator

    def callback_new_connection(self) -> _RequestHandler:
        return _handler(self, self.simulator)


class ModbusSimulator:
    """Simulated machines behind one Modbus TCP port (or one serial line for RTU).

    `async with ModbusSimulator(port=0, seed=1) as sim:`, then `sim.port`. The models tick every
    `tick` seconds; `freeze(True)` stops them so tests can compare exact values.
    """

    def __init__(self, machines: list[Machine] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, tick: float = 0.1, serial_port: str | None = None,
                 baudrate: int = 19200, parity: str = "N", stopbits: int = 1,
                 framer: str = "socket", max_connections: int | None = None,
                 max_read_registers: int = READ_REGISTERS,
                 max_read_bits: int = READ_BITS, pace_baudrate: int | None = None) -> None:
        self.machines = machines if machines is not None else load_machines()
        self.units = {m.unit_id: _Unit(m) for m in self.machines}
        self.host = host
        # port=0 picks a free port now, not at start: tests use `port` before starting (a
        # device that is down at start) and after a stop/start (the same PLC rebooting).
        self.port = port or (0 if serial_port else free_port(host))
        self.seed = seed
        self.tick = tick
        self.serial_port = serial_port
        # serial_port="pty": a pty of our own (pty.py); clients open `serial_path`.
        self.serial_path: str | None = None if serial_port == PTY else serial_port
        self._held_slave: int | None = None
        self.serial: dict[str, Any] = {"baudrate": baudrate, "parity": parity,
                                       "stopbits": stopbits}
        self.requests: Counter[int] = Counter()
        # TCP framing: "socket" (Modbus TCP) or "rtu" (RTU over TCP, a serial gateway in
        # transparent mode); a serial line is always RTU.
        self.framer = FramerType.RTU if framer == "rtu" or serial_port else FramerType.SOCKET
        self.max_connections = max_connections  # TCP clients served at once (None: any)
        self.connections = 0  # TCP connections accepted
        self.refused = 0  # TCP connections closed for being over max_connections
        # A read of more is answered with exception 3, as the spec says (a device may take
        # fewer than the spec's 125 registers / 2,000 bits: many meters do).
        self.max_read_registers, self.max_read_bits = max_read_registers, max_read_bits
        self.refused_quantities = 0  # requests answered with exception 3 for their quantity
        # Answer as late as a line of this baud rate would carry request and answer (pacing.py).
        self.pace_baudrate = pace_baudrate
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, unit) of each request
        self._faults: dict[int | None, Fault] = {}
        self._frozen = False
        self._ticks = 0
        self._set_time: float | None = None  # a simulated time set by a test (frozen)
        self._server: _TcpServer | _SerialServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._update()
        # pymodbus 3.16 insists on a context at construction and warns that these are deprecated;
        # it is replaced by our own datastore right after.
        pymodbus_log = logging.getLogger("pymodbus")
        level = pymodbus_log.level
        pymodbus_log.setLevel(logging.ERROR)
        try:
            placeholder = ModbusServerContext(devices={1: ModbusDeviceContext()}, single=False)
        finally:
            pymodbus_log.setLevel(level)
        server: _TcpServer | _SerialServer
        if self.serial_port:
            port = PTY_MASTER if self.serial_port == PTY else self.serial_port
            server = _SerialServer(placeholder, framer=FramerType.RTU, port=port,
                                   custom_pdu=ANY_QUANTITY, **self.serial)
        else:
            server = _TcpServer(placeholder, address=(self.host, self.port), framer=self.framer,
                                custom_pdu=ANY_QUANTITY)
        server.simulator = self
        # Our own datastore: it answers from the models' tables.
        server.context = _Datastore(self)  # type: ignore[assignment]
        await server.serve_forever(background=True)
        self._server = server
        if self.serial_port == PTY:
            self._claim_pty(server)
        self._ticker = asyncio.create_task(self._tick_forever())
        log.info("modbus simulator: %d machines on %s", len(self.units),
                 self.serial_path or f"{self.host}:{self.port}")

    def _claim_pty(self, server: _TcpServer | _SerialServer) -> None:
        transport = server.transport
        serial = getattr(transport, "sync_serial", None)
        if serial is None:
            raise PtyError(f"modbus simulator: could not open a pty ({PTY_MASTER})")
        self.serial_path, self._held_slave = claim_slave(serial.fileno())

    async def stop(self) -> None:
        tasks = [*self._answers, *([self._ticker] if self._ticker else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ticker = None
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._held_slave is not None:
            os.close(self._held_slave)
            self._held_slave = None
            self.serial_path = None

    def spawn(self, answer: Coroutine[Any, Any, None]) -> None:
        """Run one request's answer as a task we own, so `stop()` can cancel a delayed one."""
        task = asyncio.get_running_loop().create_task(answer)
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            if not self._frozen:
                self._ticks += 1
                self._update()

    def _update(self) -> None:
        t = self.time
        for unit in self.units.values():
            unit.store(unit.machine.update(t, self._ticks, self.seed))

    # -- for tests ---------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """The simulated time in seconds: deterministic, not wall-clock (ticks x tick)."""
        return self._ticks * self.tick if self._set_time is None else self._set_time

    def freeze(self, frozen: bool = True) -> None:
        if not frozen and self._set_time is not None:  # tick on from the time set
            self._ticks, self._set_time = round(self._set_time / self.tick), None
        self._frozen = frozen

    def set_time(self, t: float) -> None:
        """Freeze the models at simulated time `t` (seconds) and serve their values at it: a test
        drives the clock, e.g. along the wall clock to script a machine's shift. The models
        start at 0: an earlier time is held at 0."""
        self._frozen, self._set_time = True, max(0.0, t)
        self._update()

    def set_schedule(self, unit_id: int, schedule: Schedule | None) -> None:
        """Give a press or packer a scripted schedule (None: back to its seeded one)."""
        self.units[unit_id].machine.schedule = schedule
        self._update()

    def value_of(self, unit_id: int, tag: str) -> Any:
        """The engineering value the model holds now (what the gateway should publish)."""
        if tag == SEQUENCE_TAG:
            return self.units[unit_id].sequence
        return self.units[unit_id].machine.values[tag]

    def write_registers(self, unit_id: int, table: str, address: int, values: list[Any]) -> None:
        self.units[unit_id].tables[table][address:address + len(values)] = values

    def read_registers(self, unit_id: int, table: str, address: int, count: int) -> list[Any]:
        return list(self.units[unit_id].tables[table][address:address + count])

    def request_count(self, unit_id: int) -> int:
        return self.requests[unit_id]

    def reset_counts(self) -> None:
        self.requests.clear()
        self.arrivals.clear()

    def set_fault(self, unit_id: int | None, kind: str, **params: Any) -> None:
        """Make a unit (None: every unit) misbehave until `set_fault(unit_id, "none")`.

        silent: never answer (the client times out); delay (seconds=): answer late;
        exception (code=): answer every request with that Modbus exception code;
        drop: close the TCP connection on each request (on a serial line: stay silent);
        short: answer reads with fewer values than asked (one register, or one byte of bits).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}: {', '.join(FAULT_KINDS)}")
        fault = Fault(kind, **params)
        if kind == "exception":
            ExcCodes(fault.code)  # a ValueError now rather than a broken answer later
        if unit_id is None:
            self._faults = {None: fault}
        else:
            self._faults[unit_id] = fault

    def fault_of(self, unit_id: int) -> Fault:
        return self._faults.get(unit_id) or self._faults.get(None) or Fault()
