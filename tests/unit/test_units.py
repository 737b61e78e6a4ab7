from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.units import parse_duration, parse_size

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("1s", 1.0), ("1.5s", 1.5), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("3", 3.0), (2, 2.0), (0.5, 0.5),
])
def test_durations_parse_to_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "1 fortnight", "-1s", "", True])
def test_invalid_durations_are_rejected(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("512MiB", 512 * 2**20), ("1GiB", 2**30), ("10MB", 10**7), ("100", 100), (4096, 4096),
])
def test_sizes_parse_to_bytes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@given(st.integers(min_value=0, max_value=10**6))
def test_milliseconds_round_trip(ms: int) -> None:
    assert parse_duration(f"{ms}ms") == pytest.approx(ms / 1000)
