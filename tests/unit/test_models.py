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
