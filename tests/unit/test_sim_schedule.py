"""The simulated machines' production schedule: hand-computed moments of a scripted schedule,
seeded schedules that are the same under the same seed, and counts that never go back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.modbus.machines import MODELS
from simulators.modbus.schedule import (
    FAULT,
    RUNNING,
    STOPPED,
    Schedule,
    ScheduleError,
    Segment,
    seeded_schedule,
)

pytestmark = pytest.mark.unit
# The shift of tests/integration/test_oee_shift.py: 20 s running, 12 s not, 40 parts, 5 rejects.
SHIFT = Schedule([Segment(10, RUNNING), Segment(10, STOPPED, 1), Segment(6, FAULT, 11),
                  Segment(10, RUNNING, reject_every=4), Segment(2, STOPPED, 3)], cycle_time=0.5)


@pytest.mark.parametrize(("t", "state", "reason", "parts", "rejects", "run"), [
    (-5.0, RUNNING, 0, 0, 0, 0.0),
    (0.0, RUNNING, 0, 0, 0, 0.0),
    (0.49, RUNNING, 0, 0, 0, 0.49),
    (0.5, RUNNING, 0, 1, 0, 0.5),
    (10.0, STOPPED, 1, 20, 0, 10.0),
    (20.0, FAULT, 11, 20, 0, 10.0),
    (27.99, RUNNING, 0, 23, 0, 11.99),
    (28.0, RUNNING, 0, 24, 1, 12.0),
    (36.0, STOPPED, 3, 40, 5, 20.0),
    (38.0 + 0.5, RUNNING, 0, 41, 5, 20.5),  # the next cycle of the schedule
])
def test_scripted_schedule_moments(t: float, state: str, reason: int, parts: int,
                                   rejects: int, run: float) -> None:
    moment = SHIFT.at(t)
    assert (moment.state, moment.reason, moment.parts, moment.rejects) == (
        state, reason, parts, rejects)
    assert moment.run_seconds == pytest.approx(run)


def test_seeded_schedule_is_the_same_under_the_same_seed_only() -> None:
    assert seeded_schedule(1, "press-01", 2.2).segments == \
        seeded_schedule(1, "press-01", 2.2).segments
    assert seeded_schedule(1, "press-01", 2.2).segments != \
        seeded_schedule(2, "press-01", 2.2).segments
    states = {s.state for s in seeded_schedule(1, "press-01", 2.2).segments}
    assert states == {RUNNING, STOPPED, FAULT}


def test_a_demo_machine_changes_state_within_its_first_minute() -> None:
    for seed in range(5):
        schedule = seeded_schedule(seed, "press-01", 2.2)
        assert {schedule.at(t).state for t in range(0, 81)} - {RUNNING}


@given(seed=st.integers(0, 1000), t=st.floats(0, 7 * 86_400), dt=st.floats(0, 3600))
def test_counts_never_go_back_and_rejects_never_exceed_parts(seed: int, t: float,
                                                            dt: float) -> None:
    schedule = seeded_schedule(seed, "m", 1.1)
    before, after = schedule.at(t), schedule.at(t + dt)
    assert after.parts >= before.parts and after.rejects >= before.rejects
    assert 0 <= after.rejects <= after.parts
    assert after.run_seconds >= before.run_seconds - 1e-6


@pytest.mark.parametrize("kind", ["stamping_press", "packaging_line"])
def test_a_machine_follows_a_schedule_it_is_given(kind: str) -> None:
    values = MODELS[kind](21.0, 0, 0, "m", schedule=SHIFT)
    assert values["stop_reason"] == 11
    assert not values["running" if kind == "stamping_press" else "conveyor_running"]


@pytest.mark.parametrize(("segment", "message"), [
    (dict(seconds=0), "more than 0"), (dict(seconds=1, state="idle"), "unknown state"),
    (dict(seconds=1, state=STOPPED), "reason 0"), (dict(seconds=1, reason=2), "reason 0"),
])
def test_a_segment_that_cannot_be_is_refused(segment: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Segment(**segment)  # type: ignore[arg-type]
