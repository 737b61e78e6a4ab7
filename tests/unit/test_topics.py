from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Quality, Reading
from gateway.sinks.topics import (
    encode_payload,
    render_topic,
    status_topic,
    validate_topic_template,
)

pytestmark = pytest.mark.unit
TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
DEFAULT = "{site}/{area}/{line}/{device}/{tag}"
VALUES = {"gateway": "edge-01", "site": "jeonju", "area": "stamping", "line": "line-1",
          "device": "press-01", "tag": "oil_temperature"}


def test_default_template_renders_the_isa95_path() -> None:
    assert render_topic(DEFAULT, VALUES) == "jeonju/stamping/line-1/press-01/oil_temperature"


def test_empty_levels_are_left_out() -> None:
    assert render_topic(DEFAULT, {**VALUES, "area": "", "line": ""}) == \
        "jeonju/press-01/oil_temperature"


def test_wildcards_and_slashes_in_names_become_underscores() -> None:
    assert render_topic(DEFAULT, {**VALUES, "device": "a/b", "tag": "x+#"}) == \
        "jeonju/stamping/line-1/a_b/x__"


def test_status_topic() -> None:
    assert status_topic("jeonju", "edge-01") == "jeonju/_gateway/edge-01/status"


@pytest.mark.parametrize(("template", "message"), [
    ("{site}/{machine}/{tag}", "unknown placeholder {machine}"),
    ("{site}/{device}", "needs {tag}"),
    ("plant/#/{tag}", "wildcards"),
    ("{site/{tag}", "invalid topic template"),
])
def test_bad_templates_are_rejected_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate_topic_template(template)


def test_payload_matches_the_wire_contract() -> None:
    reading = Reading(device="d", tag="t", value=21.5, source_ts=TS, unit="degC")
    assert encode_payload(reading) == \
        b'{"value":21.5,"quality":"good","ts":"2026-11-24T01:02:03.123456Z","unit":"degC"}'


def test_bad_payload_carries_the_error() -> None:
    reading = Reading(device="d", tag="t", value=None, quality=Quality.BAD, source_ts=TS,
                      error="modbus exception 2 (illegal data address)")
    assert json.loads(encode_payload(reading)) == {
        "value": None, "quality": "bad", "ts": "2026-11-24T01:02:03.123456Z",
        "error": "modbus exception 2 (illegal data address)"}


def test_nan_is_sent_as_null_and_bad() -> None:
    payload = json.loads(encode_payload(Reading(device="d", tag="t", value=math.nan,
                                                source_ts=TS)))
    assert payload["value"] is None and payload["quality"] == "bad"


names = st.text(min_size=1, max_size=12)


@given(names, names, names)
def test_rendered_topics_never_hold_wildcards_or_empty_levels(site: str, device: str,
                                                              tag: str) -> None:
    topic = render_topic(DEFAULT, {**VALUES, "site": site, "device": device, "tag": tag})
    assert "+" not in topic and "#" not in topic and "\x00" not in topic
    assert "" not in topic.split("/")


values = st.one_of(st.booleans(), st.integers(-2**63, 2**64 - 1),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))


@given(values)
def test_payload_round_trips_the_value(value: bool | int | float | str) -> None:
    reading = Reading(device="d", tag="t", value=value, source_ts=TS)
    payload = json.loads(encode_payload(reading))
    assert payload["value"] == value and type(payload["value"]) is type(value)
    assert payload["quality"] == "good"


def test_device_cycles_close_when_a_tag_comes_again() -> None:
    from gateway.sinks.topics import device_cycles

    def r(device: str, tag: str, value: int) -> Reading:
        return Reading(device=device, tag=tag, value=value, source_ts=TS)

    batch = [r("a", "x", 1), r("a", "y", 2), r("b", "x", 3), r("a", "x", 4), r("b", "y", 5)]
    cycles = device_cycles(batch)
    assert [[(x.device, x.value) for x in c] for c in cycles] == [
        [("a", 1), ("a", 2)], [("b", 3), ("b", 5)], [("a", 4)]]


def test_device_payload_holds_every_value_and_flags_bad_ones() -> None:
    from gateway.sinks.topics import encode_device_payload

    later = TS.replace(microsecond=223456)
    payload = json.loads(encode_device_payload([
        Reading(device="d", tag="oil", value=21.5, source_ts=TS, unit="degC"),
        Reading(device="d", tag="running", value=True, source_ts=later),
        Reading(device="d", tag="door", value=None, quality=Quality.BAD, source_ts=TS,
                error="modbus exception 2"),
    ]))
    assert payload == {"ts": "2026-11-24T01:02:03.223456Z",
                       "values": {"oil": 21.5, "running": True, "door": None},
                       "units": {"oil": "degC"}, "bad": {"door": "modbus exception 2"}}


def test_device_topic_must_not_name_a_tag() -> None:
    with pytest.raises(ValueError, match="no \\{tag\\}"):
        validate_topic_template("{site}/{device}/{tag}", per_tag=False)
    assert render_topic("{site}/{area}/{line}/{device}", VALUES) == \
        "jeonju/stamping/line-1/press-01"
