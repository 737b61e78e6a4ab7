"""`gateway check --writable`: limits shown per writable tag, unbounded numeric ones warned."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.config import ModbusTag
from gateway.writable_surface import WritableTag, describe, limits_of, unbounded, warnings


def tag(**keys: object) -> ModbusTag:
    return ModbusTag.model_validate({"name": "t", "table": "holding", "address": 0, **keys})


def test_bounded_setpoint_shows_range_unit_and_interval_without_warning() -> None:
    entry = WritableTag("press", tag(name="rate", writable=True, min=0, max=60, unit="1/min"))
    lines = describe([entry], ["mqtt"])
    assert lines[1] == "  press.rate: range: 0..60 1/min, min_write_interval 100ms"
    assert "commands accepted on sink(s): mqtt" in lines[2]
    assert warnings([entry]) == []


def test_a_writable_tag_without_max_is_warned() -> None:
    entry = WritableTag("press", tag(name="rate", writable=True, min=0))
    assert limits_of(entry.tag) == "range: 0..inf"
    assert warnings([entry]) == ["press.rate is writable without min/max: any value a client "
                                 "sends goes to the PLC (add min and max)"]


def test_bool_and_enum_list_their_allowed_values_and_need_no_bounds() -> None:
    door = tag(name="door", type="bool", bit=3, writable=True)
    mode = tag(name="mode", writable=True, enum={0: "idle", 1: "run"})
    assert limits_of(door) == "allowed: true|false"
    assert limits_of(mode) == "allowed: 0 (idle), 1 (run)"
    assert warnings([WritableTag("p", door), WritableTag("p", mode)]) == []


def test_no_writable_tags_and_no_command_sink_are_said() -> None:
    assert describe([], []) == ["writable: none (no tag has writable: true)"]
    assert describe([WritableTag("p", tag(writable=True, min=0, max=1))], [])[-1].endswith(
        "nothing is written yet")


@given(low=st.none() | st.integers(-1000, 0), high=st.none() | st.integers(1, 1000))
def test_warned_exactly_when_a_bound_is_missing(low: int | None, high: int | None) -> None:
    entry = WritableTag("p", tag(writable=True, min=low, max=high))
    assert unbounded(entry) == (low is None or high is None)
