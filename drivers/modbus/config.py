"""The Modbus device config: connection (TCP or RTU), planning limits and tags."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from drivers.base import DeviceConfig, TagConfig
from drivers.modbus.codec import DataType, Order, register_count
from drivers.modbus.planner import BIT_TABLES, MAX_BITS, MAX_REGISTERS, Table
from gateway.strict import StrictModel
from gateway.units import Duration


class ModbusConnection(StrictModel):
    host: str | None = Field(None, description="TCP: the PLC's address")
    port: int = Field(502, ge=1, le=65535, description="TCP port")
    serial: str | None = Field(None, description="RTU: serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(9600, gt=0, description="RTU baud rate")
    parity: Literal["N", "E", "O"] = Field("N", description="RTU parity: N, E or O")
    stopbits: Literal[1, 2] = Field(1, description="RTU stop bits: 1 or 2")
    bytesize: Literal[7, 8] = Field(8, description="RTU data bits: 7 or 8")
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id")
    timeout: Duration = Field(1.0, gt=0, description="Answer timeout of one request")

    @model_validator(mode="after")
    def _tcp_or_rtu(self) -> ModbusConnection:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give exactly one of host (Modbus TCP) or serial (Modbus RTU)")
        return self


class ModbusTag(TagConfig):
    table: Table = Field(description="holding | input | coil | discrete")
    address: int = Field(ge=0, le=65535, description="Zero-based protocol address")
    type: DataType = Field("uint16", description="bool int16 uint16 int32 uint32 int64 uint64 "
                           "float32 float64 string")
    byte_order: Order = Field("big", description="Byte order within each 16-bit register")
    word_order: Order = Field("big", description="Register order of 32/64-bit values")
    scale: float = Field(1.0, description="value * scale + offset")
    offset: float = Field(0.0, description="Added after scaling: value * scale + offset")
    length: int | None = Field(None, ge=1, le=MAX_REGISTERS, validate_default=True,
                               description="string only: registers (2 characters each)")
    bit: int | None = Field(None, ge=0, le=15,
                            description="bool on a register: the bit (0 = least significant)")
    writable: bool = Field(False, description="Commands may write it (holding or coil only)")
    write_single: bool = Field(False, description="Write a one-register tag with function 6 "
                               "instead of 16 (devices without function 16)")
    min: float | None = Field(None, description="Lowest value a write may set (engineering "
                              "units)")
    max: float | None = Field(None, description="Highest value a write may set (engineering "
                              "units)")

    # Field validators (rather than one model validator) so that an error's key path names the
    # offending key: `tags[3].bit`, not just `tags[3]`. Each sees the fields declared before it.

    @field_validator("type")
    @classmethod
    def _bits_are_bool(cls, value: DataType, info: ValidationInfo) -> DataType:
        table = info.data.get("table")
        if table in BIT_TABLES and value != "bool":
            raise ValueError(f"a {table} holds single bits: use type bool")
        return value

    @field_validator("length", mode="after")
    @classmethod
    def _length_for_strings(cls, value: int | None, info: ValidationInfo) -> int | None:
        data_type = info.data.get("type")
        if data_type == "string" and value is None:
            raise ValueError("type string needs length (registers, 2 characters each)")
        if data_type not in (None, "string") and value is not None:
            raise ValueError(f"length applies to type string only, not {data_type}")
        return value

    @field_validator("bit", mode="after")
    @classmethod
    def _bit_of_a_register(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if info.data.get("table") in BIT_TABLES:
            raise ValueError(f"bit does not apply to a {info.data['table']} (already one bit)")
        if info.data.get("type") not in (None, "bool"):
            raise ValueError(f"bit needs type bool, not {info.data['type']}")
        return value

    @field_validator("writable", mode="after")
    @classmethod
    def _writable_table(cls, value: bool, info: ValidationInfo) -> bool:
        table = info.data.get("table")
        if value and table in ("input", "discrete"):
            what = "an input register" if table == "input" else "a discrete input"
            raise ValueError(f"{what} cannot be written: writable needs table holding or coil")
        if value and info.data.get("scale") == 0:
            raise ValueError("a tag with scale 0 cannot be written (nothing to reverse)")
        return value

    @field_validator("write_single", mode="after")
    @classmethod
    def _single_register(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        if info.data.get("table") != "holding":
            raise ValueError("write_single (function 6) applies to holding registers only")
        data_type, length = info.data.get("type"), info.data.get("length")
        if data_type is not None and register_count(data_type, length) != 1:
            raise ValueError(f"write_single (function 6) writes one register; a {data_type} "
                             f"needs {register_count(data_type, length)}")
        return value

    @field_validator("min", "max", mode="after")
    @classmethod
    def _limits_of_numbers(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number, not {value}")
        if info.data.get("type") in ("bool", "string"):
            raise ValueError(f"{info.field_name} applies to numbers, not type "
                             f"{info.data['type']}")
        if info.field_name == "max" and info.data.get("min") is not None \
                and value < info.data["min"]:
            raise ValueError(f"max {value} is below min {info.data['min']}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        if (self.scale != 1 or self.offset != 0) and self.type in ("bool", "string"):
            raise ValueError(f"scale and offset do not apply to type {self.type}")
        if self.address + self.size > 65536:
            raise ValueError(f"the tag needs {self.size} registers from address {self.address} "
                             f"and runs past address 65535")
        return self

    @property
    def size(self) -> int:
        """Addresses the tag occupies (registers, or one bit in a coil/discrete table)."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)


class ModbusDeviceConfig(DeviceConfig):
    driver: Literal["modbus"] = Field(description="Selects the Modbus driver")
    connection: ModbusConnection = Field(description="Modbus TCP (host) or RTU (serial)")
    max_gap: int = Field(10, ge=0, description="Unused addresses a read may bridge between tags")
    max_registers_per_read: int = Field(
        MAX_REGISTERS, ge=1, le=MAX_REGISTERS,
        description="Lower than 125 for devices that break the spec")
    max_bits_per_read: int = Field(MAX_BITS, ge=1, le=MAX_BITS,
                                   description="Coils/discrete inputs per read")
    tags: list[ModbusTag] = Field(min_length=1, description="The values to read; names unique")

    def declared_tags(self) -> list[ModbusTag]:
        return self.tags

    def tag_types(self) -> dict[str, str]:
        return {tag.name: tag.type for tag in self.tags}

    def value_types(self) -> dict[str, str]:
        return {tag.name: "float64" if tag.type not in ("bool", "string") and
                (tag.scale != 1 or tag.offset != 0) else tag.type for tag in self.tags}

    @field_validator("tags")
    @classmethod
    def _tags_fit(cls, tags: list[ModbusTag], info: ValidationInfo) -> list[ModbusTag]:
        names = [tag.name for tag in tags]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate tag names: {', '.join(duplicates)}")
        cap = info.data.get("max_registers_per_read", MAX_REGISTERS)
        for tag in tags:
            if tag.table not in BIT_TABLES and tag.size > cap:
                raise ValueError(f"tag {tag.name} needs {tag.size} registers, more than "
                                 f"max_registers_per_read ({cap})")
        return tags
