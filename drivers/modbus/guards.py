"""Plant-engineer guards: configs that are valid but probably not what was meant.

A Modbus manual often lists registers in the 1-based Modicon notation (40001 is holding
register 0, 30001 is input register 0); the config wants the zero-based protocol address.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus.config import ModbusDeviceConfig

# (first, last) Modicon numbers of holding (4xxxx) and input (3xxxx) registers. Either range
# is warned on either register table: a 3xxxx number on a holding tag is a mistake too.
_MODICON_RANGES = ((40001, 49999), (30001, 39999))
_REGISTER_TABLES = ("holding", "input")


@dataclass(frozen=True)
class TagWarning:
    """A warning about `tags[index].key` of one device."""

    index: int
    key: str
    message: str


def modicon_address(table: str, address: int) -> int | None:
    """The zero-based address `address` probably means, if it looks like Modicon notation."""
    if table not in _REGISTER_TABLES:
        return None
    for first, last in _MODICON_RANGES:
        if first <= address <= last:
            return address - first
    return None


def address_warnings(device: ModbusDeviceConfig) -> list[TagWarning]:
    """One warning per register tag whose address reads like 1-based Modicon notation."""
    found = []
    for index, tag in enumerate(device.tags):
        meant = modicon_address(tag.table, tag.address)
        if meant is not None:
            found.append(TagWarning(index, "address", (
                f"{tag.address} looks like 1-based Modicon notation; the zero-based "
                f"address it likely means is {meant} (addresses are protocol "
                "addresses, from 0)")))
    return found
