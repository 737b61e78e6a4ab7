"""`good_reading`, the unvalidated constructor of the driver hot path, equals validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.models import Reading, good_reading

pytestmark = pytest.mark.unit


class _Str(str):
    pass


class _Int(int):
    pass


names = st.text(max_size=8) | st.text(max_size=8).map(_Str)
values = (st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
          | st.integers().map(_Int) | st.tuples(st.integers(), st.booleans()) | st.none())
timestamps = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                          timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))]))


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same type, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@given(device=names, tag=names, value=values, ts=timestamps, unit=st.none() | names)
def test_good_reading_equals_the_validated_reading(device: str, tag: str, value: Any,
                                                   ts: datetime, unit: str | None) -> None:
    validated = Reading(device=device, tag=tag, value=value, source_ts=ts, unit=unit)
    fast = good_reading(device, tag, value, ts, unit)
    assert type(fast) is Reading
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.__pydantic_extra__ == validated.__pydantic_extra__
    assert fast.__pydantic_private__ == validated.__pydantic_private__
    assert fast.__dict__.keys() == validated.__dict__.keys()
    for name, expected in validated.__dict__.items():
        assert _same(fast.__dict__[name], expected), name
    if not (isinstance(value, float) and math.isnan(value)):
        assert fast == validated
        assert hash(fast) == hash(validated)
    assert fast.model_dump_json() == validated.model_dump_json()


def test_good_reading_is_frozen_like_a_validated_one() -> None:
    reading = good_reading("press-01", "counter", 5, datetime.now(UTC))
    with pytest.raises(ValueError, match="frozen"):
        reading.value = 6  # type: ignore[misc]


def test_good_reading_still_rejects_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        good_reading("press-01", "counter", 5, datetime(2026, 1, 1))


def test_good_readings_share_one_fields_set_that_a_copy_does_not_change() -> None:
    """The fields set is shared (a set of five names was 472 of a reading's ~830 bytes), so
    nothing may add to it: a Reading is frozen, and `model_copy(update=...)` adds to a copy."""
    ts = datetime.now(UTC)
    first, second = good_reading("press-01", "counter", 5, ts), good_reading("m", "t", 1.5, ts)
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__
    shared = set(first.model_fields_set)
    copied = first.model_copy(update={"error": "edited"})
    assert copied.error == "edited" and copied.model_fields_set == shared | {"error"}
    assert first.model_fields_set == shared == second.model_fields_set
    assert "error" not in good_reading("m", "t", 2, ts).model_fields_set
    assert first.model_dump(exclude_unset=True) == {"device": "press-01", "tag": "counter",
                                                    "value": 5, "source_ts": ts, "unit": None}
