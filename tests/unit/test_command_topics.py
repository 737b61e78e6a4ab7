"""Command topics and payloads (pure): filters, matching back to (device, tag), parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import MqttSinkConfig
from gateway.sinks.command_topics import (
    CommandIdError,
    CommandPayloadError,
    device_commands,
    match_command,
    parse_command,
    result_topic,
    tag_of_level,
)
from gateway.sinks.mqtt_wire import render_topic

pytestmark = pytest.mark.unit
TEMPLATE = "{site}/{area}/{line}/{device}/{tag}"
LEVELS = {"gateway": "edge-01", "site": "plant", "area": "stamping", "line": "line-1"}


def test_one_filter_per_device_with_the_tag_level_as_a_wildcard() -> None:
    commands = device_commands(TEMPLATE, "press-01", LEVELS)
    assert commands.filter == "plant/stamping/line-1/press-01/+/set"
    topic = "plant/stamping/line-1/press-01/speed_setpoint/set"
    assert match_command(topic, [commands]) == ("press-01", "speed_setpoint")


def test_results_data_and_other_devices_do_not_match() -> None:
    commands = [device_commands(TEMPLATE, "press-01", LEVELS)]
    for topic in ("plant/stamping/line-1/press-01/speed/set/result",
                  "plant/stamping/line-1/press-01/speed",
                  "plant/stamping/line-1/press-02/speed/set",
                  "plant/stamping/line-1/press-01/a/b/set"):
        assert match_command(topic, commands) is None, topic


def test_tag_inside_a_level_and_twice() -> None:
    commands = device_commands("x/{device}/t_{tag}/v/{tag}", "d", LEVELS)
    assert commands.filter == "x/d/+/v/+/set"
    assert match_command("x/d/t_speed/v/speed/set", [commands]) == ("d", "speed")
    assert match_command("x/d/t_speed/v/other/set", [commands]) is None


def test_an_empty_area_leaves_its_level_out_as_the_data_topic_does() -> None:
    levels = {**LEVELS, "area": ""}
    commands = device_commands(TEMPLATE, "press-01", levels)
    data = render_topic(TEMPLATE, {**levels, "device": "press-01", "tag": "speed"})
    assert data == "plant/line-1/press-01/speed"
    assert match_command(data + "/set", [commands]) == ("press-01", "speed")


names = st.text(st.characters(codec="utf-8", exclude_characters="\ue000"), min_size=1,
                max_size=12)


@given(device=names, tag=names)
def test_every_tags_data_topic_plus_set_matches_back_to_it(device: str, tag: str) -> None:
    commands = device_commands(TEMPLATE, device, LEVELS)
    data = render_topic(TEMPLATE, {**LEVELS, "device": device, "tag": tag})
    found = match_command(data + "/set", [commands])
    assert found is not None
    assert found[0] == device
    assert tag_of_level(found[1], [tag]) == tag


def test_a_sanitized_level_maps_back_to_its_tag_and_an_unknown_one_stays() -> None:
    assert tag_of_level("a_b", ["x", "a/b"]) == "a/b"
    assert tag_of_level("nope", ["x"]) == "nope"
    assert result_topic("a/b/set") == "a/b/set/result"


@pytest.mark.parametrize(("payload", "value", "command_id"), [
    (b'{"value": 21.5, "id": "abc"}', 21.5, "abc"),
    (b'{"value": true}', True, None),
    (b"42", 42, None),
    (b'"RECIPE-7"', "RECIPE-7", None),
    (b"null", None, None),
    (b'{"value": null, "id": null}', None, None),
])
def test_envelope_or_bare_value(payload: bytes, value: object, command_id: str | None) -> None:
    request = parse_command(payload)
    assert request.value == value and request.id == command_id


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "empty payload"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"id": 7, "value": 1}', "id must be a string"),
])
def test_payloads_that_ask_for_nothing(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandPayloadError, match=reason):
        parse_command(payload)


def test_a_readable_id_is_kept_when_the_rest_is_wrong() -> None:
    with pytest.raises(CommandIdError, match="no value") as caught:
        parse_command(b'{"id": "c1"}')
    assert caught.value.id == "c1"
    with pytest.raises(CommandIdError, match="unknown key 'valeu'"):
        parse_command(b'{"id": "c2", "valeu": 3}')


def test_protocol_accepts_a_bare_5_and_commands_refuse_a_kept_session() -> None:
    assert MqttSinkConfig(protocol=5).protocol == "5"  # type: ignore[arg-type]
    assert MqttSinkConfig().protocol == "3.1.1"
    with pytest.raises(ValueError, match="session_expiry needs protocol: 5"):
        MqttSinkConfig(session_expiry=60)
    with pytest.raises(ValueError, match="commands: true needs session_expiry: 0"):
        MqttSinkConfig(protocol="5", session_expiry=60, commands=True)
