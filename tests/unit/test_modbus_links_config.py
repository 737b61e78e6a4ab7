"""Devices on one serial port (or one host:port) share a link: the settings of that link must
agree, and `check` names the key that differs, with its line."""

from __future__ import annotations

import textwrap

import pytest

from drivers.modbus.config import ModbusConnection
from gateway.config import parse_config
from gateway.errors import ConfigError

pytestmark = pytest.mark.unit

HEAD = """\
gateway: {id: edge-01}
sinks: {mqtt: {url: "mqtt://127.0.0.1:1883"}}
devices:
"""


def meter(name: str, connection: str) -> str:
    return textwrap.indent(textwrap.dedent(f"""\
        - name: {name}
          driver: modbus
          connection:
            {connection}
          tags: [{{name: kwh, table: input, address: 0}}]
        """), "  ")


def test_devices_on_one_port_must_agree_on_the_baud_rate() -> None:
    text = HEAD + meter("m1", "{serial: /dev/ttyUSB0, baudrate: 9600, unit_id: 1}") \
        + meter("m2", "{serial: /dev/ttyUSB0, baudrate: 19200, unit_id: 2}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bus.yaml", {})
    [problem] = caught.value.problems
    assert problem.path == "devices[1].connection.baudrate"
    assert problem.line == 12
    assert "baudrate 19200 differs from 9600 of device m1" in problem.message


def test_a_default_that_differs_is_named_too() -> None:
    text = HEAD + meter("m1", "{serial: /dev/ttyUSB0, parity: E, unit_id: 1}") \
        + meter("m2", "{serial: /dev/ttyUSB0, unit_id: 2}") \
        + meter("m3", "{serial: /dev/ttyUSB0, parity: E, link_delay: 5ms, unit_id: 3}")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bus.yaml", {})
    found = {p.path: p.message for p in caught.value.problems}
    assert set(found) == {"devices[1].connection.parity", "devices[2].connection.link_delay"}
    assert "parity N differs from E" in found["devices[1].connection.parity"]


def test_agreeing_devices_and_other_ports_are_fine() -> None:
    text = HEAD + meter("m1", "{serial: /dev/ttyUSB0, baudrate: 9600, unit_id: 1}") \
        + meter("m2", "{serial: /dev/ttyUSB0, baudrate: 9600, unit_id: 2}") \
        + meter("m3", "{serial: /dev/ttyUSB1, baudrate: 19200, unit_id: 2}") \
        + meter("gw1", "{host: 10.0.0.5, link_delay: 5ms, framer: rtu, unit_id: 1}") \
        + meter("gw2", "{host: 10.0.0.5, link_delay: 5ms, framer: rtu, unit_id: 2}")
    config = parse_config(text, "bus.yaml", {})
    assert [d.name for d in config.devices] == ["m1", "m2", "m3", "gw1", "gw2"]


def test_link_keys() -> None:
    tcp = ModbusConnection.model_validate({"host": "10.0.0.5", "port": 502})
    rtu_tcp = ModbusConnection.model_validate({"host": "10.0.0.5", "framer": "rtu"})
    serial = ModbusConnection.model_validate({"serial": "/dev/ttyUSB0"})
    assert tcp.link_key() == ("tcp", "10.0.0.5", "502", "socket")
    assert rtu_tcp.link_key() == ("tcp", "10.0.0.5", "502", "rtu")
    assert serial.link_key() == ("serial", "/dev/ttyUSB0") and serial.framing == "rtu"


def test_a_serial_line_cannot_use_the_socket_framer() -> None:
    with pytest.raises(ValueError, match="framer socket"):
        ModbusConnection.model_validate({"serial": "/dev/ttyUSB0", "framer": "socket"})


