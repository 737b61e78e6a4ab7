from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import pytest

from gateway.backoff import Backoff
from gateway.deadband import DeadbandFilter
from gateway.models import Quality, Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reading(value: object, quality: Quality = Quality.GOOD, tag: str = "t") -> Reading:
    return Reading(device="d", tag=tag, value=value, quality=quality,  # type: ignore[arg-type]
                   source_ts=T0)


def test_deadband_publishes_only_moves_larger_than_the_band() -> None:
    band = DeadbandFilter({("d", "t"): 0.5})
    published = [r.value for v in [20.0, 20.3, 20.5, 20.6, 19.9, 21.2]
                 for r in band.apply([reading(v)])]
    assert published == [20.0, 20.6, 19.9, 21.2]


def test_quality_change_always_passes_the_deadband() -> None:
    band = DeadbandFilter({("d", "t"): 10})
    assert band.apply([reading(1.0)])
    assert band.apply([reading(None, Quality.BAD)])
    assert band.apply([reading(1.0)])


def test_tags_without_deadband_always_pass() -> None:
    band = DeadbandFilter({("d", "t"): 1})
    assert len(band.apply([reading(1, tag="other"), reading(1, tag="other")])) == 2


def test_string_deadband_tag_passes_on_change_only() -> None:
    band = DeadbandFilter({("d", "t"): 1})
    assert [r.value for v in ["A", "A", "B"] for r in band.apply([reading(v)])] == ["A", "B"]


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, cap=30)
    delays = [backoff.next() for _ in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(15 <= d <= 30 for d in delays[8:])
    backoff.reset()
    assert backoff.next() <= 0.5


def test_backoffs_share_one_generator_and_still_jitter_apart() -> None:
    """A `random.Random` each was 2.5 KB a device; many devices still draw different delays."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        backoffs = [Backoff(initial=1.0, cap=30) for _ in range(500)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / len(backoffs) < 500, f"{held / len(backoffs):.0f} bytes a backoff"
    assert len({backoff.next() for backoff in backoffs}) > 450
