"""The Modicon-notation guard: register addresses 40001-49999 and 30001-39999 are valid but
probably the 1-based numbers of a manual; the warning names the zero-based address meant."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.guards import address_warnings, modicon_address

pytestmark = pytest.mark.unit


def device(*tags: dict[str, Any]) -> ModbusDeviceConfig:
    return ModbusDeviceConfig.model_validate({
        "name": "meter-01", "driver": "modbus",
        "connection": {"host": "127.0.0.1", "port": 5020}, "tags": list(tags)})


@pytest.mark.parametrize(("table", "address", "meant"), [
    ("holding", 40001, 0), ("holding", 40101, 100), ("holding", 49999, 9998),
    ("input", 30001, 0), ("input", 39999, 9998), ("input", 40011, 10), ("holding", 30005, 4)])
def test_modicon_numbers_give_the_zero_based_address(table: str, address: int,
                                                     meant: int) -> None:
    assert modicon_address(table, address) == meant


@pytest.mark.parametrize(("table", "address"), [
    ("holding", 40000), ("holding", 50000), ("input", 30000), ("holding", 0),
    ("holding", 65535), ("coil", 40001), ("discrete", 30001)])
def test_other_addresses_and_bit_tables_are_not_warned(table: str, address: int) -> None:
    assert modicon_address(table, address) is None


@given(st.sampled_from(["holding", "input", "coil", "discrete"]),
       st.integers(min_value=0, max_value=65535))
def test_a_warning_exactly_for_register_addresses_in_the_modicon_ranges(
        table: str, address: int) -> None:
    meant = modicon_address(table, address)
    in_range = table in ("holding", "input") and (
        40001 <= address <= 49999 or 30001 <= address <= 39999)
    assert (meant is not None) == in_range
    if meant is not None:
        assert 0 <= meant <= 9998
        assert address - meant in (40001, 30001)


def test_the_device_warnings_name_each_tag_and_the_address_meant() -> None:
    warnings = address_warnings(device(
        {"name": "ok", "table": "holding", "address": 100},
        {"name": "power", "table": "holding", "address": 40101, "type": "float32"},
        {"name": "flag", "table": "coil", "address": 40001, "type": "bool"},
        {"name": "energy", "table": "input", "address": 30001}))
    assert [(w.index, w.key) for w in warnings] == [(1, "address"), (3, "address")]
    assert "40101" in warnings[0].message and "is 100" in warnings[0].message
    assert "is 0" in warnings[1].message
