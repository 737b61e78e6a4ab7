"""A Modbus twin: the simulator's pymodbus server (simulators/modbus/server.py: request
handling, fault switches, restarts) over units laid out from a config's tags.

Tables span the whole protocol range (65536 addresses). Values are written into the registers
every tick, except registers a client wrote: those hold the written value from then on (a
writable tag keeps what a command set; a bit written by read-modify-write holds its word).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from pymodbus.constants import ExcCodes

from simulators.modbus.encoding import to_registers
from simulators.modbus.server import (
    FUNCTION_TABLES,
    ModbusSimulator,
    _Datastore,
    empty_tables,
)
from simulators.twin.layout import ModbusServerPlan, ModbusUnitPlan, RegisterTag
from simulators.twin.values import value_at

TABLE_SIZE = 65536
_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q",
           "uint64": ">Q", "float32": ">f", "float64": ">d"}


def raw_of(tag: RegisterTag, value: Any) -> Any:
    """The raw register value that the tag's scale and offset turn into `value`."""
    if tag.type in ("bool", "string") or (tag.scale == 1 and tag.offset == 0):
        return value
    raw = (value - tag.offset) / tag.scale
    return raw if tag.type in ("float32", "float64") else round(raw)


def decode(tag: RegisterTag, registers: list[int]) -> Any:
    """Registers back to the raw value: the twin's own decoder (the inverse of the simulator's
    encoder), so that what it says it holds is not the gateway's codec's opinion."""
    words = list(registers)
    if tag.byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if tag.type == "bool":
        return bool(words[0] >> tag.bit & 1) if tag.bit is not None else words[0] != 0
    if tag.type == "string":
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        return raw.rstrip(b"\x00 ").decode("latin-1")
    if tag.word_order == "little":
        words.reverse()
    return struct.unpack(_STRUCT[tag.type], b"".join(w.to_bytes(2, "big") for w in words))[0]


def register_count(tag: RegisterTag) -> int:
    if tag.table in ("coil", "discrete") or tag.type in ("bool", "int16", "uint16"):
        return 1
    if tag.type == "string":
        return tag.length or 1
    return {"int32": 2, "uint32": 2, "float32": 2}.get(tag.type, 4)


class TwinUnit:
    """One device's four tables (what `_Datastore` reads and writes), moved from its layout."""

    def __init__(self, plan: ModbusUnitPlan) -> None:
        self.plan = plan
        self.tables = empty_tables(TABLE_SIZE)
        self.held: dict[str, set[int]] = {table: set() for table in self.tables}
        self.sequence_tags = [t for t in plan.tags if t.motion.behaviour == "sequence"]
        self.sequences = {t.name: 0 for t in self.sequence_tags}
        # Per sequence tag: (number, wall time) of every read that covered it.
        self.served: dict[str, list[tuple[int, float]]] = {t.name: [] for t in self.sequence_tags}

    def update(self, t: float) -> None:
        for tag in self.plan.tags:
            if tag.motion.behaviour != "sequence" and tag.bit is None:
                self._store(tag, raw_of(tag, value_at(tag.motion, t)))
        for tag in self.plan.tags:  # bits last: they live in the words stored above
            if tag.bit is not None:
                self._store_bit(tag, bool(value_at(tag.motion, t)))

    def _store(self, tag: RegisterTag, raw: Any) -> None:
        table = self.tables[tag.table]
        if tag.table in ("coil", "discrete"):
            if tag.address not in self.held[tag.table]:
                table[tag.address] = bool(raw)
            return
        registers = to_registers(raw, tag.type, tag.byte_order, tag.word_order, tag.length)
        held = self.held[tag.table]
        for i, register in enumerate(registers):
            if tag.address + i not in held:
                table[tag.address + i] = register

    def _store_bit(self, tag: RegisterTag, state: bool) -> None:
        assert tag.bit is not None
        if tag.address in self.held[tag.table]:
            return
        table = self.tables[tag.table]
        bit = tag.bit if tag.byte_order == "big" else (tag.bit + 8) % 16
        word = table[tag.address]
        table[tag.address] = word | 1 << bit if state else word & ~(1 << bit) & 0xFFFF

    def written(self, table: str, address: int, count: int) -> None:
        self.held[table].update(range(address, address + count))

    def next_sequence(self, table: str, address: int, count: int) -> None:
        """A sequence tag counts the reads that cover it: consecutive polls see n, n+1, ..."""
        for tag in self.sequence_tags:
            if tag.table == table and address <= tag.address < address + count:
                number = self.sequences[tag.name] = self.sequences[tag.name] + 1
                self.served[tag.name].append((number, time.time()))
                self._store(tag, number)

    def value_of(self, name: str) -> Any:
        """The engineering value the twin holds now (what a gateway should read)."""
        from drivers.modbus.codec import apply_scale, shortest_float32

        tag = next(t for t in self.plan.tags if t.name == name)
        table = self.tables[tag.table]
        if tag.table in ("coil", "discrete"):
            return bool(table[tag.address])
        raw = decode(tag, table[tag.address:tag.address + register_count(tag)])
        if tag.type == "float32":
            raw = shortest_float32(raw)
        return apply_scale(raw, tag.scale, tag.offset)


class _TwinDatastore(_Datastore):
    """The simulator's datastore over full-size tables, marking what clients write as held."""

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1) -> list[Any] | ExcCodes:
        unit = self._unit(device_id)
        table = FUNCTION_TABLES[func_code]
        if address + count > TABLE_SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        unit.next_sequence(table, address, count)
        return list(unit.tables[table][address:address + count])

    async def async_setValues(self, device_id: int, func_code: int, address: int,
                              values: list[Any]) -> ExcCodes | None:
        unit = self._unit(device_id)
        table = FUNCTION_TABLES[func_code]
        if address + len(values) > TABLE_SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        unit.tables[table][address:address + len(values)] = values
        twin = self.simulator.units[device_id]
        assert isinstance(twin, TwinUnit)
        twin.written(table, address, len(values))
        return None


class ModbusTwin(ModbusSimulator):
    """`async with ModbusTwin(plan, port=0) as twin:` serves every unit of one server plan."""

    def __init__(self, plan: ModbusServerPlan, *, host: str = "127.0.0.1", port: int = 0,
                 tick: float = 0.2) -> None:
        super().__init__([], host=host, port=port, tick=tick)
        self.plan = plan
        self.twins = {unit_id: TwinUnit(unit) for unit_id, unit in plan.units.items()}
        self.units = self.twins  # type: ignore[assignment]  # duck-typed like _Unit
        self._started = time.monotonic()

    async def __aenter__(self) -> ModbusTwin:
        await self.start()
        return self

    async def start(self) -> None:
        await super().start()
        assert self._server is not None
        self._server.context = _TwinDatastore(self)  # type: ignore[assignment]

    def _update(self) -> None:
        if self._frozen:
            return
        t = time.monotonic() - getattr(self, "_started", time.monotonic())
        for unit in self.twins.values():
            unit.update(t)

    def value_of(self, unit_id: int, tag: str) -> Any:
        return self.twins[unit_id].value_of(tag)

    def unit_of(self, device: str) -> TwinUnit:
        return next(u for u in self.twins.values() if u.plan.device == device)
