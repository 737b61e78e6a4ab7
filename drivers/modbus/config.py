"""The Modbus device config: connection (TCP or RTU), planning limits and tags."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.base import DeviceConfig
from drivers.modbus.codec import DataType, Order, register_count
from drivers.modbus.planner import BIT_TABLES, MAX_BITS, MAX_REGISTERS, Table
from gateway.units import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModbusConnection(_Strict):
    host: str | None = Field(None, description="TCP: the PLC's address")
    port: int = Field(502, ge=1, le=65535, description="TCP port")
    serial: str | None = Field(None, description="RTU: serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, gt=0, description="RTU baud rate")
    parity: Literal["N", "E", "O"] = Field("N", description="RTU parity: N, E or O")
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout: Duration = Field(1.0, gt=0, description="Answer timeout of one request")

    @model_validator(mode="after")
    def _tcp_or_rtu(self) -> ModbusConnection:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give exactly one of host (Modbus TCP) or serial (Modbus RTU)")
        return self


class ModbusTag(_Strict):
    name: str = Field(min_length=1, pattern=r"^[^/#+\s]+$",
                      description="Tag name (a topic level, an InfluxDB field)")
    table: Table = Field(description="holding | input | coil | discrete")
    address: int = Field(ge=0, le=65535, description="Zero-based protocol address")
    type: DataType = Field("uint16", description="bool int16 uint16 int32 uint32 int64 uint64 "
                           "float32 float64 string")
    byte_order: Order = Field("big", description="Byte order within each 16-bit register")
    word_order: Order = Field("big", description="Register order of 32/64-bit values")
    scale: float = Field(1.0, description="value * scale + offset")
    offset: float = 0.0
    unit: str | None = Field(None, description="Engineering unit, e.g. degC")
    deadband: float | None = Field(None, ge=0, description="Publish only moves larger than this")
    length: int | None = Field(None, ge=1, le=MAX_REGISTERS,
                               description="string only: registers (2 characters each)")
    bit: int | None = Field(None, ge=0, le=15,
                            description="bool on a register: the bit (0 = least significant)")

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"a {self.table} holds single bits: use type bool")
        if self.bit is not None and (self.type != "bool" or self.table in BIT_TABLES):
            raise ValueError("bit picks one bit of a holding or input register of type bool")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("length is required for type string, and only for it")
        if (self.scale != 1 or self.offset != 0) and self.type in ("bool", "string"):
            raise ValueError(f"scale and offset do not apply to type {self.type}")
        if self.address + self.size > 65536:
            raise ValueError("the tag runs past address 65535")
        return self

    @property
    def size(self) -> int:
        """Addresses the tag occupies (registers, or one bit in a coil/discrete table)."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)


class ModbusDeviceConfig(DeviceConfig):
    driver: Literal["modbus"]
    connection: ModbusConnection
    max_gap: int = Field(10, ge=0, description="Unused addresses a read may bridge between tags")
    max_registers_per_read: int = Field(
        MAX_REGISTERS, ge=1, le=MAX_REGISTERS,
        description="Lower than 125 for devices that break the spec")
    max_bits_per_read: int = Field(MAX_BITS, ge=1, le=MAX_BITS,
                                   description="Coils/discrete inputs per read")
    reconnect_max_backoff: Duration = Field(30.0, gt=0,
                                            description="Cap of the reconnect backoff")
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _tags_fit(self) -> ModbusDeviceConfig:
        names = [tag.name for tag in self.tags]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate tag names: {', '.join(duplicates)}")
        for tag in self.tags:
            if tag.table not in BIT_TABLES and tag.size > self.max_registers_per_read:
                raise ValueError(f"tag {tag.name} needs {tag.size} registers, more than "
                                 f"max_registers_per_read ({self.max_registers_per_read})")
        return self
