"""KPI configuration: the shift plan, the `oee:` block, and checks against the device's tags."""

from __future__ import annotations

from datetime import time
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.kpi.config import (
    KpiSettings,
    OeeConfig,
    oee_tag_problems,
    parse_clock,
    validate_oee_against_tags,
)

pytestmark = pytest.mark.unit

DESIGN_EXAMPLE = """
timezone: Asia/Seoul
shifts:
  - {name: early, start: "06:00", end: "14:00"}
  - {name: late,  start: "14:00", end: "22:00"}
  - {name: night, start: "22:00", end: "06:00"}
kpi_interval: 10s
"""
OEE_EXAMPLE = """
running: {tag: running}
total_count: cycle_counter
reject_count: reject_counter
ideal_cycle_time: 2s
"""


def message(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(str(e["msg"]) for e in exc.value.errors())


def test_the_designs_example_validates() -> None:
    settings = KpiSettings.model_validate(yaml.safe_load(DESIGN_EXAMPLE))
    assert [s.name for s in settings.shifts] == ["early", "late", "night"]
    assert settings.shifts[2].start == time(22) and settings.shifts[2].end == time(6)
    assert settings.kpi_interval == 10.0
    oee = OeeConfig.model_validate(yaml.safe_load(OEE_EXAMPLE))
    assert oee.ideal_cycle_time == 2.0
    assert oee.counter_tags() == {"total_count": "cycle_counter",
                                  "reject_count": "reject_counter"}


def test_default_is_one_whole_day_shift_named_day_in_utc() -> None:
    settings = KpiSettings()
    assert [(s.name, s.start, s.end) for s in settings.shifts] == [("day", time(0), time(0))]
    assert settings.timezone == "UTC" and settings.kpi_interval == 10.0


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_unknown_time_zone_is_an_error(zone: str) -> None:
    with pytest.raises(ValidationError) as exc:
        KpiSettings(timezone=zone)
    assert "unknown time zone" in message(exc)


def test_overlapping_shifts_are_an_error_naming_both() -> None:
    with pytest.raises(ValidationError) as exc:
        KpiSettings.model_validate({"shifts": [
            {"name": "early", "start": "06:00", "end": "14:00"},
            {"name": "night", "start": "22:00", "end": "07:00"}]})
    assert "overlapping shifts: early and night" in message(exc)


def test_duplicate_shift_names_are_an_error() -> None:
    with pytest.raises(ValidationError) as exc:
        KpiSettings.model_validate({"shifts": [
            {"name": "a", "start": "06:00", "end": "14:00"},
            {"name": "a", "start": "14:00", "end": "22:00"}]})
    assert "duplicate shift names: a" in message(exc)


def test_a_break_outside_its_shift_is_an_error_with_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        KpiSettings.model_validate({"shifts": [
            {"name": "late", "start": "14:00", "end": "22:00",
             "breaks": [{"start": "21:45", "end": "22:15"}]}]})
    error = exc.value.errors()[0]
    assert error["loc"] == ("shifts", 0)
    assert "not inside shift 'late'" in error["msg"]


def test_unquoted_yaml_time_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as exc:
        KpiSettings.model_validate(yaml.safe_load(
            "shifts: [{name: late, start: 14:00, end: '22:00'}]"))
    assert 'write times in quotes, e.g. "14:00"' in message(exc)


@pytest.mark.parametrize(("text", "clock"), [
    ("06:00", time(6)), ("6:30", time(6, 30)), ("23:59:30", time(23, 59, 30)),
    ("24:00", time(0)), (" 00:00 ", time(0))])
def test_clock_times_parse(text: str, clock: time) -> None:
    assert parse_clock(text) == clock


@pytest.mark.parametrize("text", ["25:00", "12:60", "noon", "12", "", None, True])
def test_bad_clock_times_are_errors(text: Any) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_clock(text)


@given(hour=st.integers(0, 23), minute=st.integers(0, 59))
def test_every_wall_clock_minute_parses_back(hour: int, minute: int) -> None:
    assert parse_clock(f"{hour:02d}:{minute:02d}") == time(hour, minute)


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError):
        KpiSettings.model_validate({"shift": []})
    with pytest.raises(ValidationError):
        OeeConfig.model_validate({**yaml.safe_load(OEE_EXAMPLE), "target": 0.85})


@pytest.mark.parametrize("counts", [
    {"reject_count": "r", "good_count": "g"}, {}])
def test_exactly_one_of_reject_and_good_count(counts: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as exc:
        OeeConfig.model_validate({"running": {"tag": "run"}, "total_count": "t",
                                  "ideal_cycle_time": "1s", **counts})
    assert "exactly one of reject_count or good_count" in message(exc)


def test_ideal_cycle_time_must_be_positive_and_state_values_non_empty() -> None:
    with pytest.raises(ValidationError):
        OeeConfig.model_validate({"running": {"tag": "run"}, "total_count": "t",
                                  "reject_count": "r", "ideal_cycle_time": "0s"})
    with pytest.raises(ValidationError):
        OeeConfig.model_validate({"running": {"tag": "state", "values": []},
                                  "total_count": "t", "reject_count": "r",
                                  "ideal_cycle_time": "1s"})


def oee(**block: Any) -> OeeConfig:
    return OeeConfig.model_validate({"running": {"tag": "running"}, "total_count": "parts",
                                     "reject_count": "rejects", "ideal_cycle_time": "1s",
                                     **block})


def test_tags_that_fit_have_no_problems() -> None:
    types = {"running": "bool", "parts": "uint32", "rejects": "uint16", "temp": "float32"}
    assert validate_oee_against_tags(oee(), types) == []
    assert validate_oee_against_tags(oee(running={"tag": "temp", "values": [1]}), types) == []


def test_tag_problems_name_the_key_inside_the_oee_block() -> None:
    types = {"state": "uint16", "parts": "float32", "oee": "float32"}
    assert oee_tag_problems(oee(), types) == [
        ("running.tag", "no tag named 'running' on this device"),
        ("total_count", "tag 'parts' is float32: a counter must be an integer type "
                        "(int16 uint16 int32 uint32 int64 uint64)"),
        ("reject_count", "no tag named 'rejects' on this device"),
        ("", "tag 'oee' has the name of a KPI the gateway publishes for this device: "
             "rename it"),
    ]
    assert validate_oee_against_tags(oee(running={"tag": "state"}), types)[0] == (
        "running.tag: tag 'state' is uint16, not bool: give `values:` (the state codes that "
        "mean running)")


def test_tags_of_undeclared_type_are_not_checked_for_type() -> None:
    types = {"running": "", "parts": "", "rejects": ""}  # e.g. OPC UA nodes
    assert validate_oee_against_tags(oee(), types) == []
