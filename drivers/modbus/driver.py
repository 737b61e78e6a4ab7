"""The Modbus driver (pymodbus 3.16): executes the read plan over TCP or RTU and decodes."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymodbus.pdu import ModbusPDU

from drivers.base import DeviceConfig, Driver
from drivers.modbus.answers import Expected
from drivers.modbus.codec import apply_scale, decode_registers, encode_value, is_finite, set_bit
from drivers.modbus.config import ModbusDeviceConfig, ModbusTag
from drivers.modbus.framing import quiet_pymodbus
from drivers.modbus.link import BadAnswer, ModbusLink, links
from drivers.modbus.planner import BIT_TABLES, ReadPlan, ReadRequest, TagSpan, plan_reads
from drivers.modbus.writes import check_writable, plan_write
from gateway.errors import DecodeError, DeviceUnreachable, WriteRefused
from gateway.metrics import COUNTERS
from gateway.models import (
    GOOD_FIELDS,
    Quality,
    Reading,
    bad_reading,
    good_reading,
    trusted_reading,
    utc_now,
)

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target device failed to respond"}
_READ_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers",
                "coil": "read_coils", "discrete": "read_discrete_inputs"}
_TRANSACTION_IDS = re.compile(r"transaction id \d+, expected \d+")
_READ_FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_GOOD = Quality.GOOD
ILLEGAL_DATA_VALUE = 3
PROBLEM_SUMMARY_EVERY = 60.0  # seconds between two log lines of a problem that persists


@dataclass
class _Problem:
    """A request's current problem: logged when it starts, then summarised periodically."""

    text: str
    logged_at: float
    repeats: int = 0  # occurrences since the last line logged


class ModbusDriver(Driver):
    config_model = ModbusDeviceConfig
    config: ModbusDeviceConfig

    def __init__(self, config: DeviceConfig) -> None:
        assert isinstance(config, ModbusDeviceConfig)
        super().__init__(config)
        self.tags = {tag.name: tag for tag in config.tags}
        # Lowered when the device refuses a read as too large (exception 3): see _shrink.
        self.max_registers, self.max_bits = (config.max_registers_per_read,
                                             config.max_bits_per_read)
        # Per request, what each of its tags is: (tag, offset in the answer, sign bit of a
        # 16-bit integer read as it is, or None for a tag that goes through the codec).
        self._layout: dict[ReadRequest, list[tuple[ModbusTag, int, int | None]]] = {}
        self.plan: ReadPlan = self._plan(config.tags)
        self._size_not_the_cause: set[bool] = set()  # bits?: exception 3 is not about size
        self._link: ModbusLink | None = None  # shared with the devices on the same port
        # The problem of each request, logged when it starts, changes and ends, and summarised
        # every `problem_summary_every` seconds while it persists (not once a poll).
        self._problems: dict[ReadRequest, _Problem] = {}
        self.problem_summary_every = PROBLEM_SUMMARY_EVERY
        quiet_pymodbus()

    def _plan(self, tags: Sequence[ModbusTag] | Sequence[TagSpan]) -> ReadPlan:
        """The reads of `tags` within the current caps, with their layouts."""
        spans = [t if isinstance(t, TagSpan) else TagSpan(t.name, t.table, t.address, t.size)
                 for t in tags]
        plan = plan_reads(spans, max_gap=self.config.max_gap, max_registers=self.max_registers,
                          max_bits=self.max_bits)
        for request in plan.requests:
            self._layout[request] = [(self.tags[span.name], span.address - request.start,
                                      _plain_sign(self.tags[span.name]))
                                     for span in request.tags]
        return plan

    def writable_tags(self) -> set[str]:
        return {name for name, tag in self.tags.items() if tag.writable}

    def describe_plan(self) -> str:
        conn = self.config.connection
        framing = "" if conn.framing == "socket" else " rtu"
        where = (f"tcp {conn.host}:{conn.port}{framing}" if conn.host else
                 f"rtu {conn.serial} {conn.baudrate} {conn.bytesize}{conn.parity}{conn.stopbits}")
        lines = [f"{self.name} ({where}, unit {conn.unit_id}): {len(self.tags)} tags in "
                 f"{len(self.plan.requests)} request(s) per poll"]
        return "\n".join([lines[0], *(f"  {line}" for line in self.plan.describe())])

    async def connect(self) -> None:
        """Join the link of this device's port (opened by the first device that needs it)."""
        if self._link is None:
            self._link = links().acquire(self.name, self.config.connection)
        await self._link.connect(self.name)

    async def close(self) -> None:
        """Leave the link; the last device on it closes it."""
        link, self._link = self._link, None
        if link is not None:
            links().release(self.name, link)

    async def read(self) -> list[Reading]:
        readings: list[Reading] = []
        for request in self.plan.requests:
            readings += await self._execute(request)
        return readings

    async def _execute(self, request: ReadRequest, may_shrink: bool = True) -> list[Reading]:
        expected = Expected(_READ_FUNCTION[request.table], request.start, request.count)
        try:
            answer = await self._call(expected, _READ_METHOD[request.table], request.start,
                                      count=request.count)
        except BadAnswer as bad:
            return self._all_bad(request, bad.problem.reason, bad.problem.kind, utc_now())
        arrived = utc_now()
        if answer.isError():
            if may_shrink and _exception_code(answer) == ILLEGAL_DATA_VALUE:
                smaller = await self._read_smaller(request)
                if smaller is not None:
                    return smaller
            reason = _exception_reason(answer)
            return self._all_bad(request, reason, "exception", arrived)
        values = answer.bits if request.table in BIT_TABLES else answer.registers
        if values is None or len(values) < request.count:
            got = 0 if values is None else len(values)
            reason = f"malformed answer: {got} of {request.count} values"
            return self._all_bad(request, reason, "malformed", arrived)
        if request in self._problems:
            log.info("%s: %s answered well again", self.name, request.describe())
            del self._problems[request]
        return self.decode(request, values, arrived)

    async def _read_smaller(self, request: ReadRequest) -> list[Reading] | None:
        """A device that answers exception 3 (illegal data value) to a grouped read may take
        fewer registers or bits per read than asked (many meters take far fewer than 125):
        halve this table kind's cap, down to the largest tag, and read the tags again at once
        in the smaller requests (a piece refused again shrinks further at the next poll).
        When no smaller read is answered either, the exception is not about the size: the
        caps go back and stay. None when the request cannot be split."""
        bits = request.table in BIT_TABLES
        largest = max(span.size for span in request.tags)
        if bits in self._size_not_the_cause or request.count <= largest:
            return None
        saved = self.max_registers, self.max_bits
        cap = max(largest, request.count // 2)
        self._set_caps(bits, cap)
        if (self.max_registers, self.max_bits) != saved:
            log.warning("%s: answers exception 3 (illegal data value) to a read of %d %s: "
                        "reading at most %d per request from now on", self.name,
                        request.count, "bits" if bits else "registers", cap)
        readings: list[Reading] = []
        for piece in self._plan(request.tags).requests:
            readings += await self._execute(piece, may_shrink=False)
        if any(r.quality == Quality.GOOD for r in readings):
            return readings
        self._size_not_the_cause.add(bits)
        log.warning("%s: answers exception 3 to smaller reads too: not about their size, "
                    "reading up to %d %s again", self.name, saved[1] if bits else saved[0],
                    "bits" if bits else "registers")
        self.max_registers, self.max_bits = saved
        self.plan = self._plan(self.config.tags)
        return readings

    def _set_caps(self, bits: bool, cap: int) -> None:
        if bits:
            self.max_bits = min(self.max_bits, cap)
        else:
            self.max_registers = min(self.max_registers, cap)
        self.plan = self._plan(self.config.tags)

    async def _call(self, expected: Expected, method: str, *args: Any,
                    **kwargs: Any) -> ModbusPDU:
        """One request and its answer, checked against it, in turn with the other devices on
        the link. Raises DeviceUnreachable (no answer, connection lost) or BadAnswer."""
        if self._link is None:
            raise DeviceUnreachable("not connected", self.name)
        COUNTERS.inc("gateway_modbus_requests_total", device=self.name)
        conn = self.config.connection
        return await self._link.call(self.name, conn.unit_id, conn.timeout, expected, method,
                                     *args, **kwargs)

    async def write(self, tag: str, value: object) -> object:
        """Write `value` (engineering units) to `tag`, read the tag back and return that value.

        Raises WriteRefused when nothing was written (unknown or read-only tag, wrong type,
        outside min/max, does not fit the type, an exception answer from the PLC);
        DeviceUnreachable when the device does not answer (the write may have happened);
        DecodeError when a wrong answer to the write, or a bad read-back, leaves it unclear, or
        when the value read back is not the one written (the PLC clamped it, or its logic
        overwrote it at once).
        """
        spec = check_writable(self.tags.get(tag), tag)
        planned = plan_write(spec, value)
        if spec.table == "coil":
            state = bool(planned)
            await self._write(spec, Expected(5, spec.address, value=0xFF00 if state else 0),
                              "write_coil", spec.address, state)
        elif spec.bit is not None:
            await self._write_bit(spec, bool(planned))
        else:
            registers = encode_value(planned, "bool") if isinstance(planned, bool) else planned
            await self._write_registers(spec, registers)
        read_back = await self._read_back(spec)
        written = self._written_value(spec, planned)
        if read_back != written:
            raise DecodeError(f"read back {read_back!r} after writing {written!r}", self.name,
                              spec.name)
        return read_back

    def _written_value(self, spec: ModbusTag, planned: bool | list[int]) -> object:
        """What reading the tag should give after the write: the planned raw value decoded
        (a value rounded to the raw step reads back rounded, not as it was asked)."""
        if isinstance(planned, bool):
            return planned
        return self._reading(spec, planned, spec.address, utc_now()).value

    async def _write_bit(self, spec: ModbusTag, state: bool) -> None:
        """Read-modify-write of the status word: only the tag's bit changes (a bit the PLC
        changes between the read and the write is overwritten: Modbus has no bit write for
        holding registers)."""
        assert spec.bit is not None
        try:
            [current] = await self._read_raw(spec, 1)
        except DecodeError as exc:
            raise WriteRefused(f"cannot read register {spec.address} to change its bit "
                               f"{spec.bit}: {exc}") from None
        await self._write_registers(spec, [set_bit(current, spec.bit, state, spec.byte_order)])

    async def _write_registers(self, spec: ModbusTag, registers: list[int]) -> None:
        if spec.write_single and len(registers) == 1:
            await self._write(spec, Expected(6, spec.address, value=registers[0]),
                              "write_register", spec.address, registers[0])
        else:
            await self._write(spec, Expected(16, spec.address, count=len(registers)),
                              "write_registers", spec.address, registers)

    async def _write(self, spec: ModbusTag, expected: Expected, method: str,
                     *args: Any) -> None:
        try:
            answer = await self._call(expected, method, *args)
        except BadAnswer as bad:
            COUNTERS.inc("gateway_device_errors_total", device=self.name, kind=bad.problem.kind)
            raise DecodeError(f"unclear whether it was written: {bad.problem.reason}",
                              self.name, spec.name) from None
        if answer.isError():
            COUNTERS.inc("gateway_device_errors_total", device=self.name, kind="exception")
            raise WriteRefused(f"the PLC refused the write: {_exception_reason(answer)}")

    async def _read_raw(self, spec: ModbusTag, count: int) -> Sequence[Any]:
        """`count` registers or bits of the tag's table from its address, or DecodeError."""
        table = spec.table
        expected = Expected(_READ_FUNCTION[table], spec.address, count)
        try:
            answer = await self._call(expected, _READ_METHOD[table], spec.address, count=count)
        except BadAnswer as bad:
            COUNTERS.inc("gateway_device_errors_total", device=self.name, kind=bad.problem.kind)
            raise DecodeError(bad.problem.reason, self.name, spec.name) from None
        if answer.isError():
            COUNTERS.inc("gateway_device_errors_total", device=self.name, kind="exception")
            raise DecodeError(_exception_reason(answer), self.name, spec.name)
        values: Sequence[Any] = answer.bits if table in BIT_TABLES else answer.registers
        return values[:count]

    async def _read_back(self, spec: ModbusTag) -> object:
        try:
            values = await self._read_raw(spec, spec.size)
        except DecodeError as exc:
            raise DecodeError(f"written, but reading it back failed: {exc}", self.name,
                              spec.name) from None
        reading = self._reading(spec, values, spec.address, utc_now())
        if reading.error is not None:
            raise DecodeError(f"written, but the value read back is bad: {reading.error}",
                              self.name, spec.name)
        return reading.value

    def decode(self, request: ReadRequest, values: Sequence[Any], arrived: Any) -> list[Reading]:
        """The readings of one good answer to `request`."""
        readings: list[Reading] = []
        device = self.name
        # What good_reading checks of each reading, checked once: the names and units are
        # the config's strings, the value an int, and `arrived` is one UTC datetime.
        trusted = type(arrived) is datetime and arrived.tzinfo is UTC
        for tag, offset, sign in self._layout[request]:
            if sign is not None:
                # A 16-bit integer as it is (most tags): what decode_registers, apply_scale and
                # _reading make of it, without their calls (profiled: a third of a reading).
                word = values[offset]
                if type(word) is int and 0 <= word <= 0xFFFF:
                    value = word - 0x10000 if word & sign else word
                    readings.append(trusted_reading(
                        {"device": device, "tag": tag.name, "value": value, "quality": _GOOD,
                         "source_ts": arrived, "unit": tag.unit, "error": None}, GOOD_FIELDS)
                        if trusted else good_reading(device, tag.name, value, arrived, tag.unit))
                    continue
            readings.append(self._reading(tag, values, request.start, arrived))
        return readings

    def _reading(self, tag: ModbusTag, values: Sequence[Any], start: int,
                 arrived: Any) -> Reading:
        offset = tag.address - start
        try:
            if tag.table in BIT_TABLES:
                value: Any = bool(values[offset])
            else:
                raw = decode_registers(values[offset:offset + tag.size], tag.type,
                                       tag.byte_order, tag.word_order, bit=tag.bit,
                                       length=tag.length)
                value = apply_scale(raw, tag.scale, tag.offset)
            if not is_finite(value):
                raise DecodeError(f"not a number ({value})", self.name, tag.name)
        except DecodeError as exc:
            COUNTERS.inc("gateway_device_errors_total", device=self.name, kind="decode")
            return bad_reading(self.name, tag.name, str(exc), tag.unit, arrived)
        return good_reading(self.name, tag.name, value, arrived, tag.unit)

    def _all_bad(self, request: ReadRequest, reason: str, kind: str,
                 arrived: Any) -> list[Reading]:
        COUNTERS.inc("gateway_device_errors_total", device=self.name, kind=kind)
        # Transaction ids change with every request: the same problem all the same.
        self._log_problem(request, _TRANSACTION_IDS.sub("transaction id", reason), reason)
        names = dict.fromkeys(span.name for span in request.tags)
        return [bad_reading(self.name, name, reason, self.tags[name].unit, arrived)
                for name in names]

    def _log_problem(self, request: ReadRequest, problem: str, reason: str) -> None:
        """One line when a request's problem starts or changes, then one summary line every
        `problem_summary_every` seconds while it persists (each is counted in the metrics)."""
        now = time.monotonic()
        current = self._problems.get(request)
        if current is None or current.text != problem:
            log.warning("%s: %s reading %s", self.name, reason, request.describe())
            self._problems[request] = _Problem(problem, now)
            return
        current.repeats += 1
        if now - current.logged_at >= self.problem_summary_every:
            log.warning("%s: %s reading %s, %d more time(s) in the last %.0f s", self.name,
                        reason, request.describe(), current.repeats, now - current.logged_at)
            current.logged_at, current.repeats = now, 0


def _exception_code(answer: ModbusPDU) -> int:
    return int(getattr(answer, "exception_code", 0))


def _exception_reason(answer: ModbusPDU) -> str:
    code = _exception_code(answer)
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


def _plain_sign(tag: ModbusTag) -> int | None:
    """0x8000 for an int16, 0 for a uint16 read as it is (big byte order, no bit, no scaling),
    None for every other tag."""
    if (tag.table in BIT_TABLES or tag.type not in ("int16", "uint16") or tag.bit is not None
            or tag.byte_order != "big" or tag.scale != 1 or tag.offset != 0):
        return None
    return 0x8000 if tag.type == "int16" else 0
