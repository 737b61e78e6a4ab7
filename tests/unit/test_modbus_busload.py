"""The bus load estimate (pure): wire time per request from baud rate and frame sizes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.busload import (
    bus_loads,
    capacity_table,
    char_bits,
    describe_buses,
    exchange_seconds,
)
from gateway.config import parse_config

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "README.md"


def test_a_ten_register_read_at_9600_baud() -> None:
    # 8 request bytes + 25 answer bytes, 10 bits each, plus two 3.5-character gaps.
    expected = (33 * 10 + 2 * 35) / 9600
    assert exchange_seconds("holding", 10, 9600) == pytest.approx(expected)


def test_above_19200_baud_the_gap_is_fixed_at_1_75_ms() -> None:
    assert exchange_seconds("input", 1, 115200) == pytest.approx(15 * 10 / 115200 + 0.0035)


def test_parity_and_stop_bits_lengthen_each_character() -> None:
    assert (char_bits(8, "N", 1), char_bits(8, "E", 1), char_bits(8, "E", 2)) == (10, 11, 12)


@given(st.sampled_from(["holding", "input", "coil", "discrete"]),
       st.integers(1, 125), st.sampled_from([1200, 9600, 19200, 38400, 115200]),
       st.floats(0, 0.1))
def test_more_data_slower_lines_and_delays_cost_more(table: str, count: int, baud: int,
                                                     delay: float) -> None:
    base = exchange_seconds(table, count, baud)
    assert exchange_seconds(table, count, baud, link_delay=delay) == pytest.approx(base + delay)
    assert exchange_seconds(table, count + 8, baud) > base
    assert exchange_seconds(table, count, baud * 2) < base


def bus_config(interval: str, meters: int) -> str:
    devices = "".join(textwrap.dedent(f"""\
        - name: meter-{u}
          driver: modbus
          poll_interval: {interval}
          connection: {{serial: /dev/ttyUSB0, baudrate: 9600, unit_id: {u}, link_delay: 5ms}}
          tags:
          - {{name: a, table: input, address: 0, type: float32}}
          - {{name: b, table: input, address: 50, type: float32}}
        """) for u in range(1, meters + 1))
    return ("gateway: {id: e}\nsinks: {mqtt: {url: 'mqtt://127.0.0.1:1'}}\ndevices:\n"
            + textwrap.indent(devices, "  "))


def test_ten_meters_at_9600_baud_fit_a_one_second_cycle_but_not_100ms() -> None:
    [bus] = bus_loads(parse_config(bus_config("1s", 10), "bus.yaml", {}).devices)
    per_request = exchange_seconds("input", 2, 9600, link_delay=0.005)
    assert bus.cycle_seconds == pytest.approx(10 * 2 * per_request)
    assert bus.load == pytest.approx(bus.cycle_seconds / 1.0)
    assert bus.load < 1 and "OVER 100%" not in bus.describe()[0]
    [fast] = bus_loads(parse_config(bus_config("100ms", 10), "bus.yaml", {}).devices)
    assert fast.load > 1 and "OVER 100%" in fast.describe()[0]
    assert len(fast.describe()) == 11


def test_shared_tcp_links_are_listed() -> None:
    text = bus_config("1s", 1) + textwrap.indent(textwrap.dedent("""\
        - name: gw-1
          driver: modbus
          connection: {host: 10.0.0.5, unit_id: 1, framer: rtu}
          tags: [{name: a, table: input, address: 0}]
        - name: gw-2
          driver: modbus
          connection: {host: 10.0.0.5, unit_id: 2, framer: rtu}
          tags: [{name: a, table: input, address: 0}]
        """), "  ")
    lines = describe_buses(parse_config(text, "bus.yaml", {}).devices)
    assert lines[-1] == "link 10.0.0.5:502 (rtu): one connection shared by gw-1, gw-2"
    assert lines[0].startswith("bus /dev/ttyUSB0 (9600 8N1, link_delay 5ms): 1 device(s)")


def test_the_readme_table_is_the_functions() -> None:
    assert capacity_table() in README.read_text()
