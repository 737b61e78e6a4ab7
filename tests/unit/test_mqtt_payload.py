"""The MQTT JSON payload (pure): the wire contract of DESIGN.md and its edge cases."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.models import Quality, Reading
from gateway.sinks.mqtt_wire import (
    _encode_payload,
    _json_value,
    device_cycles,
    encode_device_payload,
    encode_payload,
    format_ts,
)

pytestmark = pytest.mark.unit
TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)


def parse_ts(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def test_payload_matches_the_wire_contract() -> None:
    reading = Reading(device="d", tag="t", value=21.5, source_ts=TS, unit="degC")
    assert encode_payload(reading) == \
        b'{"value":21.5,"quality":"good","ts":"2026-11-24T01:02:03.123456Z","unit":"degC"}'


def test_bad_payload_carries_the_error_and_no_unit_key_when_unset() -> None:
    reading = Reading(device="d", tag="t", value=None, quality=Quality.BAD, source_ts=TS,
                      error="modbus exception 2 (illegal data address)")
    assert encode_payload(reading) == (
        b'{"value":null,"quality":"bad","ts":"2026-11-24T01:02:03.123456Z",'
        b'"error":"modbus exception 2 (illegal data address)"}')


def test_uncertain_quality_is_passed_through() -> None:
    reading = Reading(device="d", tag="t", value=3, quality=Quality.UNCERTAIN, source_ts=TS)
    assert json.loads(encode_payload(reading))["quality"] == "uncertain"


def test_whole_seconds_still_carry_microseconds() -> None:
    reading = Reading(device="d", tag="t", value=1, source_ts=TS.replace(microsecond=0))
    assert json.loads(encode_payload(reading))["ts"] == "2026-11-24T01:02:03.000000Z"


def test_a_local_timestamp_is_sent_in_utc() -> None:
    seoul = timezone(timedelta(hours=9))
    reading = Reading(device="d", tag="t", value=1,
                      source_ts=datetime(2026, 11, 24, 10, 2, 3, tzinfo=seoul))
    assert json.loads(encode_payload(reading))["ts"] == "2026-11-24T01:02:03.000000Z"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_sent_as_null_and_bad_with_the_reason(value: float) -> None:
    payload = json.loads(encode_payload(Reading(device="d", tag="t", value=value,
                                                source_ts=TS)))
    assert payload["value"] is None and payload["quality"] == "bad"
    assert payload["error"].startswith("not a number")


def test_non_ascii_text_stays_readable_utf8() -> None:
    reading = Reading(device="d", tag="t", value="Prüfung", source_ts=TS, unit="°C")
    assert "°C".encode() in encode_payload(reading)


def test_a_lone_surrogate_in_a_plc_string_still_encodes() -> None:
    reading = Reading(device="d", tag="t", value="ab\udcff", source_ts=TS)
    assert json.loads(encode_payload(reading))["value"] == "ab\udcff"


values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
timestamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))


@given(values, st.sampled_from(list(Quality)), timestamps, st.none() | st.text(max_size=8),
       st.none() | st.text(max_size=20))
def test_payload_parses_back_to_the_reading(value: bool | int | float | str | None,
                                            quality: Quality, ts: datetime,
                                            unit: str | None, error: str | None) -> None:
    reading = Reading(device="d", tag="t", value=value, quality=quality, source_ts=ts,
                      unit=unit, error=error)
    raw = encode_payload(reading)
    payload = json.loads(raw)
    assert payload["value"] == value and type(payload["value"]) is type(value)
    assert payload["quality"] == quality.value
    assert parse_ts(payload["ts"]) == ts
    assert payload.get("unit") == unit and ("unit" in payload) == (unit is not None)
    assert payload.get("error") == error and ("error" in payload) == (error is not None)
    assert raw == compact(payload)  # no spaces, keys in the contract's order


def compact(payload: dict[str, object]) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode()


def test_device_cycles_close_when_a_tag_comes_again() -> None:
    def r(device: str, tag: str, value: int) -> Reading:
        return Reading(device=device, tag=tag, value=value, source_ts=TS)

    batch = [r("a", "x", 1), r("a", "y", 2), r("b", "x", 3), r("a", "x", 4), r("b", "y", 5)]
    cycles = device_cycles(batch)
    assert [[(x.device, x.value) for x in c] for c in cycles] == [
        [("a", 1), ("a", 2)], [("b", 3), ("b", 5)], [("a", 4)]]


def plain_device_cycles(readings: list[Reading]) -> list[list[Reading]]:
    """device_cycles as it was first written: one lookup a reading."""
    groups: list[list[Reading]] = []
    open_groups: dict[str, tuple[list[Reading], set[str]]] = {}
    for reading in readings:
        group, tags = open_groups.get(reading.device, (None, set()))
        if group is None or reading.tag in tags:
            group, tags = [], set()
            groups.append(group)
            open_groups[reading.device] = (group, tags)
        group.append(reading)
        tags.add(reading.tag)
    return groups


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), max_size=40))
def test_device_cycles_are_the_plain_grouping_whatever_the_order(
        keys: list[tuple[str, str]]) -> None:
    batch = [Reading(device=device, tag=tag, value=n, source_ts=TS)
             for n, (device, tag) in enumerate(keys)]
    assert device_cycles(batch) == plain_device_cycles(batch)


def test_device_payload_holds_every_value_and_flags_bad_ones() -> None:
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


def test_an_array_is_a_json_list() -> None:
    reading = Reading(device="d", tag="axes", value=[1.5, 2, True, "x", None], source_ts=TS)
    assert json.loads(encode_payload(reading))["value"] == [1.5, 2, True, "x", None]
    assert json.loads(encode_device_payload([reading]))["values"] == {
        "axes": [1.5, 2, True, "x", None]}


def test_a_non_finite_element_of_an_array_is_null() -> None:
    reading = Reading(device="d", tag="axes", value=[1.0, math.nan, math.inf], source_ts=TS)
    payload = json.loads(encode_payload(reading))
    assert payload["value"] == [1.0, None, None] and payload["quality"] == "good"


@given(st.lists(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.text(), st.none()), max_size=20))
def test_arrays_round_trip_through_the_payload(items: list[object]) -> None:
    reading = Reading(device="d", tag="t", value=items, source_ts=TS)
    assert json.loads(encode_payload(reading))["value"] == [
        None if isinstance(v, float) and math.isinf(v) else v for v in items]


@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(), st.none()),
       st.sampled_from(list(Quality)), st.one_of(st.none(), st.text()),
       st.one_of(st.none(), st.text()))
def test_payloads_built_by_hand_equal_the_json_encoders(value: object, quality: Quality,
                                                         unit: str | None,
                                                         error: str | None) -> None:
    reading = Reading(device="d", tag="t", value=value, quality=quality, source_ts=TS,
                      unit=unit, error=error)
    assert encode_payload(reading) == _encode_payload(reading)


@example([Reading(device="d", tag="t", value=6.103515625e-05, source_ts=TS)])
@given(st.lists(st.builds(
    lambda tag, value, quality, unit, error, ts: Reading(
        device="d", tag=tag, value=value, quality=quality, unit=unit, error=error,
        source_ts=ts),
    tag=st.sampled_from(["t", "u", "ä\"\\", "x\ud800"]),
    value=st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=4), st.none()),
    quality=st.sampled_from([Quality.GOOD] * 5 + list(Quality)),
    unit=st.one_of(st.none(), st.sampled_from(["degC", "µm", "a\"b", "\ud800"])),
    error=st.one_of(st.none(), st.just("e")) | st.none(),
    ts=st.sampled_from([TS, TS + timedelta(microseconds=1), TS - timedelta(days=1)])),
    min_size=1, max_size=8))
def test_device_payloads_equal_the_plain_encoding_of_every_reading(
        readings: list[Reading]) -> None:
    values: dict[str, object] = {}
    units: dict[str, str] = {}
    flagged: dict[str, dict[str, str]] = {}
    for reading in readings:
        value, quality, error = _json_value(reading)
        values[reading.tag] = value
        if reading.unit is not None:
            units[reading.tag] = reading.unit
        if quality != Quality.GOOD:
            flagged.setdefault(quality.value, {})[reading.tag] = error or quality.value
    payload: dict[str, object] = {"ts": format_ts(max(readings, key=lambda r: r.source_ts)),
                                  "values": values}
    if units:
        payload["units"] = units
    payload.update(flagged)
    # The stdlib's bytes are the contract; orjson's differ below 1e-4 (`_dump` is told which).
    assert encode_device_payload(readings) == compact(payload)


floats_near_zero = st.floats(-1e-3, 1e-3) | st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(floats_near_zero | st.integers(-2**63, 2**70) | st.text(max_size=4),
                min_size=1, max_size=6))
def test_device_payloads_are_the_stdlib_encoders_bytes(values: list[object]) -> None:
    """orjson writes the payload unless a float below 1e-4 (`1e-05`, orjson `0.00001`), an int
    beyond 64 bits or a lone surrogate is in it: the bytes are the stdlib encoder's either way."""
    readings = [Reading(device="d", tag=f"t{i}", value=v, source_ts=TS)
                for i, v in enumerate(values)]
    expected = compact({"ts": format_ts(readings[0]), "values": {
        r.tag: r.value for r in readings}})
    assert encode_device_payload(readings) == expected


@given(floats_near_zero | st.lists(floats_near_zero, max_size=3) | st.text(max_size=4),
       st.none() | st.just("e\ud800"))
def test_uncommon_per_tag_payloads_are_the_stdlib_encoders_bytes(value: object,
                                                                  error: str | None) -> None:
    reading = Reading(device="d", tag="t", value=value, source_ts=TS, error=error,
                      quality=Quality.BAD if error else Quality.GOOD)
    value, quality, error = _json_value(reading)
    payload: dict[str, object] = {"value": value, "quality": quality.value,
                                  "ts": format_ts(reading)}
    if error is not None:
        payload["error"] = error
    assert _encode_payload(reading) == compact(payload)


def test_an_enumeration_value_carries_its_text() -> None:
    reading = Reading(device="m", tag="state", value=3, source_ts=datetime(2026, 1, 1, tzinfo=UTC))
    payload = json.loads(encode_payload(reading, {2: "injecting", 3: "holding"}))
    assert payload["value"] == 3 and payload["text"] == "holding"
    unnamed = json.loads(encode_payload(reading.model_copy(update={"value": 9}), {3: "holding"}))
    assert "text" not in unnamed and unnamed == json.loads(encode_payload(
        reading.model_copy(update={"value": 9})))


@given(st.lists(st.tuples(st.sampled_from("uvwxyz"), st.integers(-5, 5), st.integers(0, 3),
                          st.sampled_from(list(Quality)), st.sampled_from([None, "bar"])),
                min_size=1, max_size=6, unique_by=lambda case: case[0]))
def test_a_device_payload_has_the_latest_time_and_every_value(
        cases: list[tuple[str, int, int, Quality, str | None]]) -> None:
    """One cycle (each tag once), its readings at several instants in any order."""
    stamps = [TS.replace(microsecond=n * 1000) for n in (5, 1, 9, 3)]
    readings = [Reading(device="d", tag=tag, value=value, quality=quality,
                        source_ts=stamps[stamp], unit=unit, error=None)
                for tag, value, stamp, quality, unit in cases]
    payload = json.loads(encode_device_payload(readings))
    assert payload["ts"] == format_ts(max(readings, key=lambda r: r.source_ts))
    assert payload["values"] == {r.tag: r.value for r in readings}
    assert payload.get("units", {}) == {r.tag: r.unit for r in readings if r.unit}
    for kind in ("bad", "uncertain"):
        assert set(payload.get(kind, {})) == {r.tag for r in readings if r.quality == kind}
