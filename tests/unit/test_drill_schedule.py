"""How a drill spreads its faults over --minutes: once each in CI, in rounds for the soak."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from simulators.twin.schedule import MAX_SLOT_S, SETTLE_S, fault_schedule


def test_a_short_drill_runs_each_fault_once_held_half_its_share() -> None:
    schedule = fault_schedule(0.6, 8)
    assert schedule.rounds == 1
    assert schedule.slot_s == (36 - SETTLE_S) / 8
    assert schedule.hold_s == 1.0  # never held under a second


def test_the_one_hour_soak_starts_a_fault_at_least_every_four_minutes() -> None:
    schedule = fault_schedule(60, 8)
    assert schedule.rounds == 2
    assert schedule.slot_s <= MAX_SLOT_S
    assert schedule.rounds * 8 * schedule.slot_s == 3600 - SETTLE_S


@given(st.floats(0.1, 600), st.integers(1, 60))
def test_the_slots_fill_the_drill_in_as_few_rounds_as_keep_them_short(
        minutes: float, faults: int) -> None:
    schedule = fault_schedule(minutes, faults)
    usable = minutes * 60 - SETTLE_S
    if usable <= 0:
        assert schedule.rounds == 1 and schedule.slot_s == 0
        return
    assert math.isclose(schedule.rounds * faults * schedule.slot_s, usable)
    assert schedule.slot_s <= MAX_SLOT_S + 1e-9
    assert schedule.rounds == 1 or usable / (faults * (schedule.rounds - 1)) > MAX_SLOT_S
    assert schedule.hold_s == max(1.0, schedule.slot_s / 2)
