"""The shift calendar: local time, shifts across midnight, DST days, breaks, overlaps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.kpi.shifts import ShiftCalendar, ShiftSpec, break_problems, overlapping_shifts

pytestmark = pytest.mark.unit

THREE = [ShiftSpec("early", time(6), time(14)), ShiftSpec("late", time(14), time(22)),
         ShiftSpec("night", time(22), time(6))]
BERLIN = ShiftCalendar("Europe/Berlin", THREE)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_shifts_are_local_time_in_the_zone() -> None:
    seoul = ShiftCalendar("Asia/Seoul", THREE)
    shift = seoul.shift_at(utc(2026, 12, 3, 0, 30))  # 09:30 in Seoul
    assert shift is not None
    assert shift.label == "2026-12-03 early"
    assert shift.start == utc(2026, 12, 2, 21, 0)
    assert shift.end == utc(2026, 12, 3, 5, 0)


def test_night_shift_after_midnight_belongs_to_the_date_it_started() -> None:
    shift = BERLIN.shift_at(utc(2026, 12, 3, 2, 0))  # 03:00 CET
    assert shift is not None and shift.label == "2026-12-02 night"
    assert shift.seconds == 8 * 3600


@pytest.mark.parametrize(("instant", "hours"), [
    (utc(2026, 3, 29, 1, 0), 7),     # clocks go forward at 02:00 inside the night shift
    (utc(2026, 10, 25, 1, 0), 9),    # clocks go back at 03:00 inside the night shift
    (utc(2026, 3, 29, 10, 0), 8),    # the day shifts of those days are unchanged
])
def test_shift_length_on_dst_days_is_real_elapsed_time(instant: datetime, hours: int) -> None:
    shift = BERLIN.shift_at(instant)
    assert shift is not None and shift.seconds == hours * 3600


@pytest.mark.parametrize(("day", "hours"), [
    (date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 6, 1), 24)])
def test_whole_day_shift_lasts_23_or_25_hours_on_dst_days(day: date, hours: int) -> None:
    calendar = ShiftCalendar("Europe/Berlin", [ShiftSpec("day", time(0), time(0))])
    (shift,) = calendar.instances_on(day)
    assert shift.seconds == hours * 3600


def test_a_shift_starting_in_the_spring_gap_still_meets_its_neighbour() -> None:
    calendar = ShiftCalendar("Europe/Berlin", [ShiftSpec("a", time(22), time(2, 30)),
                                               ShiftSpec("b", time(2, 30), time(22))])
    (a,) = [s for s in calendar.instances_on(date(2026, 3, 28)) if s.name == "a"]
    (b,) = [s for s in calendar.instances_on(date(2026, 3, 29)) if s.name == "b"]
    assert a.end == b.start


def test_time_outside_every_shift_has_no_shift_and_a_next_start() -> None:
    calendar = ShiftCalendar("UTC", [ShiftSpec("early", time(6), time(14))])
    assert calendar.shift_at(utc(2026, 3, 2, 15, 0)) is None
    assert calendar.next_start_after(utc(2026, 3, 2, 15, 0)) == utc(2026, 3, 3, 6, 0)
    assert calendar.shift_at(utc(2026, 3, 2, 14, 0)) is None  # the end is not inside


def test_breaks_become_instants_inside_their_shift_across_midnight() -> None:
    night = ShiftSpec("night", time(22), time(6), ((time(23, 30), time(0, 15)),
                                                   (time(3), time(3, 30))))
    calendar = ShiftCalendar("UTC", [night])
    shift = calendar.shift_at(utc(2026, 3, 3, 1, 0))
    assert shift is not None
    assert shift.breaks == ((utc(2026, 3, 2, 23, 30), utc(2026, 3, 3, 0, 15)),
                            (utc(2026, 3, 3, 3, 0), utc(2026, 3, 3, 3, 30)))
    assert shift.break_seconds(utc(2026, 3, 3, 0, 0), utc(2026, 3, 3, 3, 10)) == 15 * 60 + 600


def test_overlapping_shifts_are_found_across_midnight() -> None:
    assert overlapping_shifts(THREE) == []
    clash = [*THREE, ShiftSpec("extra", time(5), time(7))]
    assert overlapping_shifts(clash) == [("early", "extra"), ("night", "extra")]
    assert overlapping_shifts([ShiftSpec("day", time(0), time(0)),
                               ShiftSpec("x", time(1), time(2))]) == [("day", "x")]


def test_break_problems_name_the_break() -> None:
    shift = ShiftSpec("early", time(6), time(14), ((time(10), time(10, 30)),
                                                   (time(10, 15), time(10, 45)),
                                                   (time(13, 50), time(14, 10)),
                                                   (time(9), time(9))))
    problems = break_problems(shift)
    assert problems == ["break 2 overlaps break 1",
                        "break 3 (13:50-14:10) is not inside shift 'early' (06:00-14:00)",
                        "break 4 starts and ends at 09:00"]


instants = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31),
                        timezones=st.just(UTC))


@given(instant=instants)
def test_a_covering_plan_puts_every_instant_in_exactly_one_shift(instant: datetime) -> None:
    shift = BERLIN.shift_at(instant)
    assert shift is not None and shift.contains(instant)
    local_day = instant.astimezone(BERLIN.zone).date()
    containing = [s for d in (-1, 0, 1)
                  for s in BERLIN.instances_on(local_day + timedelta(days=d))
                  if s.contains(instant)]
    assert containing == [shift]
    # consecutive shifts meet: the next one starts where this one ends
    following = BERLIN.shift_at(shift.end)
    assert following is not None and following.start == shift.end
