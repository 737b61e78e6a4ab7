"""The Modbus device config: defaults, TCP or RTU, and tag combinations that cannot work, each
rejected with a message and a key path that names the offending key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from drivers.modbus import ModbusDriver
from drivers.modbus.config import ModbusDeviceConfig
from gateway.config import parse_config
from gateway.errors import ConfigError

pytestmark = pytest.mark.unit

TCP = {"host": "127.0.0.1", "port": 5020}


def device(tags: list[dict[str, Any]] | None = None, connection: dict[str, Any] | None = None,
           **settings: Any) -> dict[str, Any]:
    return {"name": "press-01", "driver": "modbus",
            "connection": TCP if connection is None else connection,
            "tags": tags if tags is not None else [
                {"name": "oil", "table": "holding", "address": 100, "type": "float32"}],
            **settings}


def errors_of(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        ModbusDeviceConfig.model_validate(data)
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


def only_error(data: dict[str, Any]) -> tuple[tuple[int | str, ...], str]:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def test_tcp_defaults_follow_the_spec() -> None:
    config = ModbusDeviceConfig.model_validate(device(connection={"host": "plc"}))
    assert (config.connection.port, config.connection.unit_id, config.connection.timeout) == \
        (502, 1, 1.0)
    assert (config.max_gap, config.max_registers_per_read, config.max_bits_per_read) == \
        (10, 125, 2000)
    assert config.reconnect_max_backoff == 30.0
    tag = config.tags[0]
    assert (tag.byte_order, tag.word_order, tag.scale, tag.offset) == ("big", "big", 1.0, 0.0)


def test_rtu_takes_serial_line_settings() -> None:
    config = ModbusDeviceConfig.model_validate(device(connection={
        "serial": "/dev/ttyUSB0", "baudrate": 19200, "parity": "E", "stopbits": 1,
        "bytesize": 8, "unit_id": 7, "timeout": "250ms"}))
    assert config.connection.serial == "/dev/ttyUSB0" and config.connection.timeout == 0.25


@pytest.mark.parametrize("connection", [{}, {"host": "plc", "serial": "/dev/ttyUSB0"}])
def test_connection_needs_exactly_one_of_host_or_serial(connection: dict[str, Any]) -> None:
    loc, message = only_error(device(connection=connection))
    assert loc == ("connection",)
    assert "exactly one of host (Modbus TCP) or serial (Modbus RTU)" in message


def test_parity_must_be_n_e_or_o() -> None:
    loc, _ = only_error(device(connection={"serial": "/dev/ttyS0", "parity": "X"}))
    assert loc == ("connection", "parity")


def test_unknown_keys_are_errors() -> None:
    loc, _ = only_error(device(tags=[{"name": "a", "table": "holding", "address": 0,
                                      "wordorder": "little"}]))
    assert loc == ("tags", 0, "wordorder")


def test_duplicate_tag_names_are_rejected_by_name() -> None:
    tag = {"name": "oil", "table": "holding", "address": 0}
    loc, message = only_error(device(tags=[tag, {**tag, "address": 5}]))
    assert loc == ("tags",) and "duplicate tag names: oil" in message


def test_a_device_needs_at_least_one_tag() -> None:
    loc, _ = only_error(device(tags=[]))
    assert loc == ("tags",)


@pytest.mark.parametrize(("tag", "loc", "message"), [
    ({"table": "coil", "type": "uint16"}, "type", "a coil holds single bits: use type bool"),
    ({"table": "discrete", "type": "float32"}, "type", "a discrete holds single bits"),
    ({"table": "coil", "type": "bool", "bit": 2}, "bit", "bit does not apply to a coil"),
    ({"table": "holding", "type": "uint16", "bit": 2}, "bit", "bit needs type bool"),
    ({"table": "holding", "type": "string"}, "length", "type string needs length"),
    ({"table": "holding", "type": "int32", "length": 2}, "length",
     "length applies to type string only"),
    ({"table": "holding", "type": "bool", "bit": 16}, "bit", "less than or equal to 15"),
    ({"table": "holding", "address": 65536}, "address", "less than or equal to 65535"),
    ({"table": "input", "type": "float33"}, "type", "Input should be"),
    ({"table": "input", "deadband": -1}, "deadband", "greater than or equal to 0"),
])
def test_impossible_tag_is_rejected_at_the_offending_key(tag: dict[str, Any], loc: str,
                                                         message: str) -> None:
    error_loc, error_message = only_error(device(tags=[{"name": "t", "address": 0, **tag}]))
    assert error_loc == ("tags", 0, loc)
    assert message in error_message


@pytest.mark.parametrize(("data_type", "last_address"), [
    ("float32", 65534), ("float64", 65532), ("int64", 65532)])
def test_a_tag_must_end_by_address_65535(data_type: str, last_address: int) -> None:
    fits = {"name": "t", "table": "holding", "type": data_type, "address": last_address}
    ModbusDeviceConfig.model_validate(device(tags=[fits]))
    loc, message = only_error(device(tags=[{**fits, "address": last_address + 1}]))
    assert loc == ("tags", 0) and "runs past address 65535" in message


def test_scale_does_not_apply_to_strings_and_bools() -> None:
    loc, message = only_error(device(tags=[{"name": "t", "table": "holding", "address": 0,
                                            "type": "string", "length": 4, "scale": 0.1}]))
    assert loc == ("tags", 0) and "scale and offset do not apply to type string" in message


def test_a_tag_larger_than_the_devices_read_limit_is_rejected() -> None:
    tag = {"name": "recipe", "table": "holding", "address": 0, "type": "string", "length": 20}
    loc, message = only_error(device(tags=[tag], max_registers_per_read=16))
    assert loc == ("tags",)
    assert "tag recipe needs 20 registers, more than max_registers_per_read (16)" in message


def test_bits_of_one_status_word_are_valid_tags() -> None:
    tags = [{"name": f"b{bit}", "table": "input", "address": 7, "type": "bool", "bit": bit}
            for bit in range(16)]
    assert len(ModbusDeviceConfig.model_validate(device(tags=tags)).tags) == 16


def test_config_file_errors_name_the_line_of_the_offending_tag() -> None:
    text = textwrap.dedent("""\
        gateway:
          id: edge-01
        sinks:
          mqtt:
            url: mqtt://127.0.0.1:1883
        devices:
          - name: press-01
            driver: modbus
            connection: {host: 127.0.0.1}
            tags:
              - {name: ok, table: holding, address: 0}
              - name: door
                table: coil
                address: 3
                type: bool
                bit: 3
        """)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", {})
    [problem] = caught.value.problems
    assert (problem.line, problem.path) == (16, "devices[0].tags[1].bit")
    assert "bit does not apply to a coil" in problem.message


def test_readme_sample_is_a_valid_device_and_its_plan_is_shown() -> None:
    readme = (Path(__file__).resolve().parents[2] / "drivers" / "modbus" / "README.md").read_text()
    sample, shown_plan = re.findall(r"```(?:yaml)?\n(.*?)```", readme, re.S)[:2]
    [raw] = yaml.safe_load(sample)["devices"]
    driver = ModbusDriver(ModbusDeviceConfig.model_validate(raw))
    shown = [line for line in shown_plan.splitlines() if line.strip() != "..."]
    assert shown == driver.describe_plan().splitlines()[:len(shown)]
