"""The Modbus driver (pymodbus 3.16): executes the read plan over TCP or RTU and decodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.base import DeviceConfig, Driver
from drivers.modbus.codec import apply_scale, decode_registers, is_finite
from drivers.modbus.config import ModbusDeviceConfig, ModbusTag
from drivers.modbus.planner import BIT_TABLES, ReadPlan, ReadRequest, TagSpan, plan_reads
from gateway.errors import DecodeError, DeviceUnreachable
from gateway.metrics import COUNTERS
from gateway.models import Reading, bad_reading, good_reading, utc_now

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                   4: "server device failure", 5: "acknowledge", 6: "server device busy",
                   8: "memory parity error", 10: "gateway path unavailable",
                   11: "gateway target device failed to respond"}
_READ_METHOD = {"holding": "read_holding_registers", "input": "read_input_registers",
                "coil": "read_coils", "discrete": "read_discrete_inputs"}


class _Link:
    """One connection's state. pymodbus 3.16 does not fail a pending request when the peer
    closes the connection (measured: the request waits out its full timeout), so its
    connect/disconnect callback cancels the request in flight instead. One `_Link` per client,
    so a late callback from a closed client cannot touch the next connection."""

    def __init__(self) -> None:
        self.lost = False
        self.inflight: asyncio.Task[Any] | None = None

    def changed(self, connected: bool) -> None:
        if not connected:
            self.lost = True
            if self.inflight is not None:
                self.inflight.cancel()


class ModbusDriver(Driver):
    config_model = ModbusDeviceConfig

    def __init__(self, config: DeviceConfig) -> None:
        super().__init__(config)
        assert isinstance(config, ModbusDeviceConfig)
        self.settings = config
        self.tags = {tag.name: tag for tag in config.tags}
        self.plan: ReadPlan = plan_reads(
            (TagSpan(t.name, t.table, t.address, t.size) for t in config.tags),
            max_gap=config.max_gap, max_registers=config.max_registers_per_read,
            max_bits=config.max_bits_per_read)
        # Per request, what each of its tags is: (tag, offset in the answer, sign bit of a
        # 16-bit integer read as it is, or None for a tag that goes through the codec).
        self._layout = {request: [(self.tags[span.name], span.address - request.start,
                                   _plain_sign(self.tags[span.name])) for span in request.tags]
                        for request in self.plan.requests}
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._link = _Link()

    def tag_names(self) -> list[str]:
        return list(self.tags)

    def tag_units(self) -> dict[str, str | None]:
        return {name: tag.unit for name, tag in self.tags.items()}

    def deadbands(self) -> dict[str, float]:
        return {n: t.deadband for n, t in self.tags.items() if t.deadband is not None}

    def describe_plan(self) -> str:
        conn = self.settings.connection
        where = (f"tcp {conn.host}:{conn.port}" if conn.host else
                 f"rtu {conn.serial} {conn.baudrate} {conn.bytesize}{conn.parity}{conn.stopbits}")
        lines = [f"{self.name} ({where}, unit {conn.unit_id}): {len(self.tags)} tags in "
                 f"{len(self.plan.requests)} request(s) per poll"]
        return "\n".join([lines[0], *(f"  {line}" for line in self.plan.describe())])

    async def connect(self) -> None:
        conn = self.settings.connection
        # pymodbus must neither reconnect nor retry on its own: the runtime reconnects with
        # backoff, and retries would multiply the timeout of a device that is down.
        self._link = _Link()
        common: dict[str, Any] = {"timeout": conn.timeout, "retries": 0, "reconnect_delay": 0,
                                  "trace_connect": self._link.changed}
        if conn.host is not None:
            self._client = AsyncModbusTcpClient(conn.host, port=conn.port, **common)
            where = f"{conn.host}:{conn.port}"
        else:
            assert conn.serial is not None
            self._client = AsyncModbusSerialClient(
                conn.serial, baudrate=conn.baudrate, parity=conn.parity, stopbits=conn.stopbits,
                bytesize=conn.bytesize, **common)
            where = conn.serial
        try:
            connected = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise DeviceUnreachable(f"cannot connect to {where}: {exc}", self.name) from exc
        if not connected:
            raise DeviceUnreachable(f"cannot connect to {where}", self.name)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # close never raises
                log.debug("%s: error while closing: %s", self.name, exc)

    async def read(self) -> list[Reading]:
        readings: list[Reading] = []
        for request in self.plan.requests:
            readings += await self._execute(request)
        return readings

    async def _execute(self, request: ReadRequest) -> list[Reading]:
        if self._client is None or not self._client.connected or self._link.lost:
            raise DeviceUnreachable("not connected", self.name)
        method = getattr(self._client, _READ_METHOD[request.table])
        COUNTERS.inc("gateway_modbus_requests_total", device=self.name)
        unit_id = self.settings.connection.unit_id
        link = self._link
        link.inflight = asyncio.ensure_future(
            method(request.start, count=request.count, device_id=unit_id))
        try:
            answer = await link.inflight
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if link.lost and (current is None or not current.cancelling()):
                raise DeviceUnreachable(f"connection to unit {unit_id} lost", self.name) from None
            raise
        except (ModbusException, OSError) as exc:
            # pymodbus 3.16 reports a timeout as ModbusIOException and a dropped connection as
            # ConnectionException; OSError covers a socket that fails under it.
            raise DeviceUnreachable(f"no answer from unit {unit_id}: {exc}", self.name) from exc
        finally:
            link.inflight = None
        arrived = utc_now()
        if answer.isError():
            code = getattr(answer, "exception_code", 0)
            reason = f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"
            return self._all_bad(request, reason, "exception", arrived)
        values = answer.bits if request.table in BIT_TABLES else answer.registers
        if values is None or len(values) < request.count:
            got = 0 if values is None else len(values)
            reason = f"malformed answer: {got} of {request.count} values"
            return self._all_bad(request, reason, "malformed", arrived)
        return self.decode(request, values, arrived)

    def decode(self, request: ReadRequest, values: Sequence[Any], arrived: Any) -> list[Reading]:
        """The readings of one good answer to `request`."""
        readings: list[Reading] = []
        device = self.name
        for tag, offset, sign in self._layout[request]:
            if sign is not None:
                # A 16-bit integer as it is (most tags): what decode_registers, apply_scale and
                # _reading make of it, without their calls (profiled: a third of a reading).
                word = values[offset]
                if 0 <= word <= 0xFFFF:
                    readings.append(good_reading(device, tag.name, word - 0x10000 if word & sign
                                                 else word, arrived, tag.unit))
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
        log.warning("%s: %s reading %s", self.name, reason, request.describe())
        names = dict.fromkeys(span.name for span in request.tags)
        return [bad_reading(self.name, name, reason, self.tags[name].unit, arrived)
                for name in names]


def _plain_sign(tag: ModbusTag) -> int | None:
    """0x8000 for an int16, 0 for a uint16 read as it is (big byte order, no bit, no scaling),
    None for every other tag."""
    if (tag.table in BIT_TABLES or tag.type not in ("int16", "uint16") or tag.bit is not None
            or tag.byte_order != "big" or tag.scale != 1 or tag.offset != 0):
        return None
    return 0x8000 if tag.type == "int16" else 0
