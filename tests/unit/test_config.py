"""Config loading: every error named by key path and line; env substitution; secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import MqttSinkConfig, config_json_schema, load_config, parse_config
from gateway.errors import ConfigError

pytestmark = pytest.mark.unit

MINIMAL = """\
gateway:
  id: edge-01
  site: jeonju
sinks:
  mqtt:
    url: mqtt://127.0.0.1:1883
"""

MODBUS_DEVICE = """\
devices:
  - name: press-01
    driver: modbus
    area: stamping
    line: line-1
    poll_interval: 250ms
    connection:
      host: 127.0.0.1
      port: 5020
      unit_id: 1
    tags:
      - name: oil_temperature
        table: holding
        address: 100
        type: float32
        unit: degC
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), "test.yaml", env or {})
    return [(p.line, p.path) for p in caught.value.problems]


def test_minimal_config_has_documented_defaults() -> None:
    config = parse_config(MINIMAL, env={})
    assert config.gateway.id == "edge-01"
    assert config.gateway.buffer.max_size == 2**30
    assert list(config.sinks) == ["mqtt"] and config.sinks["mqtt"].qos == 1  # type: ignore[attr-defined]
    assert config.devices == []


def test_modbus_device_is_validated_by_its_driver() -> None:
    config = parse_config(MINIMAL + MODBUS_DEVICE, env={})
    device = config.devices[0]
    assert type(device).__name__ == "ModbusDeviceConfig"
    assert device.poll_interval == 0.25


def test_every_mistake_is_listed_with_key_path_and_line() -> None:
    text = """\
    gateway:
      id: edge-01
      colour: blue
      buffer:
        max_size: huge
    devices:
      - name: press-01
        driver: modbus
        poll_interval: soon
        connection: {host: 127.0.0.1, port: 5020, unit_id: 1}
        tags:
          - name: t1
            table: holding
            address: 100
            type: float33
      - name: cnc
        driver: teleport
    sinks:
      mqtt:
        url: http://broker
        qos: 2
    """
    assert problems_of(text) == [
        (3, "gateway.colour"),
        (5, "gateway.buffer.max_size"),
        (9, "devices[0].poll_interval"),
        (15, "devices[0].tags[0].type"),
        (17, "devices[1].driver"),
        (20, "sinks.mqtt.url"),
        (21, "sinks.mqtt.qos"),
    ]


def test_missing_key_points_at_its_parent() -> None:
    assert problems_of("gateway:\n  site: x\nsinks:\n  mqtt: {}\n") == [(1, "gateway.id")]


def test_no_sink_at_all_is_an_error() -> None:
    assert problems_of("gateway:\n  id: a\nsinks: {}\n") == [(3, "sinks")]


def test_duplicate_device_names_are_rejected() -> None:
    device = MODBUS_DEVICE.split("\n", 1)[1]
    text = MINIMAL + "devices:\n" + device + device
    assert (23, "devices[1].name") in problems_of(text)


def test_duplicate_yaml_key_is_an_error() -> None:
    assert problems_of("gateway:\n  id: a\n  id: b\nsinks:\n  mqtt: {}\n") == [(3, "gateway.id")]


def test_yaml_syntax_error_names_the_line() -> None:
    lines = problems_of("gateway:\n  id: [a\nsinks: {}\n")
    assert len(lines) == 1 and lines[0][0] is not None and lines[0][0] >= 2


def test_environment_variables_and_defaults_are_substituted() -> None:
    text = MINIMAL.replace("mqtt://127.0.0.1:1883", "mqtt://${BROKER:-localhost}:${PORT}")
    text += "    username: ${MQTT_USER:-}\n    password: ${MQTT_PASSWORD}\n"
    config = parse_config(text, env={"PORT": "8883", "MQTT_PASSWORD": "s3cret"})
    mqtt = config.sinks["mqtt"]
    assert isinstance(mqtt, MqttSinkConfig)
    assert mqtt.url == "mqtt://localhost:8883"
    assert mqtt.username is None
    assert mqtt.password is not None and mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())


def test_unset_environment_variable_without_default_is_an_error() -> None:
    text = MINIMAL + "    password: ${MQTT_PASSWORD}\n"
    assert problems_of(text) == [(7, "sinks.mqtt.password")]


def test_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown driver 'teleport' \(installed: .*modbus"):
        parse_config(MINIMAL + "devices:\n  - name: x\n    driver: teleport\n", env={})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.yaml")


def test_json_schema_describes_devices_of_installed_drivers() -> None:
    schema = config_json_schema()
    assert set(schema["required"]) == {"gateway", "sinks"}
    assert "ModbusDeviceConfig" in str(schema)
    assert schema["additionalProperties"] is False


def test_configuration_reference_is_generated_from_the_schema() -> None:
    from gateway.reference import markdown_reference

    committed = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    generated = markdown_reference(config_json_schema(builtin_only=True))
    assert committed == generated, "run: gateway schema --markdown > docs/configuration.md"
    assert "| `max_gap` |" in generated and "| `byte_order` |" in generated


def test_key_lines_are_read_only_when_a_problem_needs_one(tmp_path: Path) -> None:
    """Recording the line of every key while reading cost more than the models it made (780 B
    a tag); a clean file records none, and a problem still gets its exact line."""
    from gateway.config import load_config_with_lines
    from gateway.config_loading import KeyLines

    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL + MODBUS_DEVICE)
    lines = load_config_with_lines(path)[1]
    assert isinstance(lines, KeyLines) and lines._lines is None
    assert lines[("devices", 0, "poll_interval")] == 12
    assert lines[("sinks", "mqtt", "url")] == 6 and lines._lines is not None


def test_an_unset_variable_is_named_at_its_own_line() -> None:
    text = MINIMAL.replace("url: mqtt://127.0.0.1:1883",
                           "url: mqtt://127.0.0.1:1883\n    password: ${NOT_SET_HERE}")
    assert problems_of(text) == [(7, "sinks.mqtt.password")]



def test_tags_share_their_words_and_fields_sets_and_are_frozen() -> None:
    """Each key and word of the file was a string object of its own, and each tag model had a
    fields set of its own (216 B): 20 MiB at 100,000 tags (measured)."""
    from gateway.config_loading import load_yaml

    extra = ("      - {name: second, table: holding, address: 102}\n"
             "      - {name: third, table: holding, address: 103}\n")
    text = MINIMAL + MODBUS_DEVICE + extra
    first, second = load_yaml(text, "test.yaml", {}, [])[0]["devices"][0]["tags"][:2]
    first_keys, second_keys = dict(zip(first, first, strict=True)), dict(zip(second, second,
                                                                             strict=True))
    assert first_keys["table"] is second_keys["table"]
    assert first["table"] is second["table"]
    tags = parse_config(text, env={}).devices[0].tags  # type: ignore[attr-defined]
    assert tags[0].model_fields_set != tags[1].model_fields_set  # type and unit given once
    assert tags[1].__pydantic_fields_set__ is tags[2].__pydantic_fields_set__
    assert tags[1].model_fields_set == {"name", "table", "address"}
    with pytest.raises(ValueError, match="frozen"):
        tags[0].address = 7
