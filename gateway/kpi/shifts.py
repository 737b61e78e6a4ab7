"""The shift calendar: which shift an instant belongs to, in the plant's local time (pure).

Shifts are written in local wall-clock time of an IANA zone; a shift whose end is not after its
start runs across midnight, and one whose start equals its end lasts a whole day. Instances are
turned into real instants, so a shift on a DST change day lasts what the clock on the wall says
it lasts in real seconds (a 22:00-06:00 night shift is 7 h when the clocks go forward, 9 h when
they go back). A wall time that does not exist (inside the spring-forward gap) or exists twice
(fall-back) is read with `fold=0`, the offset before the change, for every shift alike, so
consecutive shifts still meet exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_SECONDS = 86400


@dataclass(frozen=True)
class ShiftSpec:
    """One shift of the plan, in local wall-clock time; `breaks` are planned stops inside it."""

    name: str
    start: time
    end: time
    breaks: tuple[tuple[time, time], ...] = ()


@dataclass(frozen=True)
class ShiftInstance:
    """One shift on one day, as real instants (UTC). `day` is the local date of its start."""

    name: str
    day: date
    start: datetime
    end: datetime
    breaks: tuple[tuple[datetime, datetime], ...] = ()

    @property
    def label(self) -> str:
        """What `oee_shift` publishes: local date and name, e.g. "2026-12-03 early"."""
        return f"{self.day.isoformat()} {self.name}"

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end

    def break_seconds(self, begin: datetime, finish: datetime) -> float:
        """Seconds of [begin, finish) that fall inside this shift's breaks."""
        total = 0.0
        for break_start, break_end in self.breaks:
            overlap = (min(finish, break_end) - max(begin, break_start)).total_seconds()
            total += max(overlap, 0.0)
        return total


def seconds_of_day(clock: time) -> int:
    return clock.hour * 3600 + clock.minute * 60 + clock.second


def span_seconds(start: time, end: time) -> int:
    """Wall-clock length from `start` to the next `end`: a whole day when they are equal."""
    length = (seconds_of_day(end) - seconds_of_day(start)) % DAY_SECONDS
    return length or DAY_SECONDS


def _pieces(offset: int, length: int) -> list[tuple[int, int]]:
    """A circular interval on the 24 h clock as one or two linear pieces within a day."""
    end = offset + length
    if end <= DAY_SECONDS:
        return [(offset, end)]
    return [(offset, DAY_SECONDS), (0, end - DAY_SECONDS)]


def _overlap(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> bool:
    return any(max(a0, b0) < min(a1, b1) for a0, a1 in first for b0, b1 in second)


def overlapping_shifts(specs: Sequence[ShiftSpec]) -> list[tuple[str, str]]:
    """Pairs of shifts whose wall-clock times overlap (each pair once, in plan order)."""
    pieces = [_pieces(seconds_of_day(s.start), span_seconds(s.start, s.end)) for s in specs]
    return [(specs[i].name, specs[j].name)
            for i in range(len(specs)) for j in range(i + 1, len(specs))
            if _overlap(pieces[i], pieces[j])]


def break_problems(spec: ShiftSpec) -> list[str]:
    """Breaks that are empty, reach outside their shift, or overlap another break."""
    problems: list[str] = []
    shift_length = span_seconds(spec.start, spec.end)
    placed: list[tuple[int, int, int]] = []
    for index, (start, end) in enumerate(spec.breaks):
        if start == end:
            problems.append(f"break {index + 1} starts and ends at {start:%H:%M}")
            continue
        offset = (seconds_of_day(start) - seconds_of_day(spec.start)) % DAY_SECONDS
        length = span_seconds(start, end)
        if offset + length > shift_length:
            problems.append(f"break {index + 1} ({start:%H:%M}-{end:%H:%M}) is not inside "
                            f"shift {spec.name!r} ({spec.start:%H:%M}-{spec.end:%H:%M})")
            continue
        for other, other_offset, other_length in placed:
            if max(offset, other_offset) < min(offset + length, other_offset + other_length):
                problems.append(f"break {index + 1} overlaps break {other + 1}")
        placed.append((index, offset, length))
    return problems


class ShiftCalendar:
    """Shift instances of a plan in a time zone; no clock of its own (instants are passed in)."""

    def __init__(self, zone: ZoneInfo | str, specs: Sequence[ShiftSpec]) -> None:
        self.zone = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
        self.specs = tuple(specs)
        self._days: dict[date, tuple[ShiftInstance, ...]] = {}

    def _instant(self, day: date, start: time, offset_seconds: int) -> datetime:
        wall = datetime.combine(day, start) + timedelta(seconds=offset_seconds)
        return wall.replace(tzinfo=self.zone).astimezone(UTC)

    def _instance(self, spec: ShiftSpec, day: date) -> ShiftInstance:
        start = self._instant(day, spec.start, 0)
        end = self._instant(day, spec.start, span_seconds(spec.start, spec.end))
        breaks = []
        for break_start, break_end in spec.breaks:
            offset = (seconds_of_day(break_start) - seconds_of_day(spec.start)) % DAY_SECONDS
            begin = self._instant(day, spec.start, offset)
            finish = self._instant(day, spec.start, offset + span_seconds(break_start, break_end))
            breaks.append((max(begin, start), min(finish, end)))
        return ShiftInstance(spec.name, day, start, end, tuple(breaks))

    def instances_on(self, day: date) -> tuple[ShiftInstance, ...]:
        """The shifts that start on a local date, in time order (empty ones left out: a shift
        that lies wholly inside a spring-forward gap)."""
        cached = self._days.get(day)
        if cached is None:
            if len(self._days) > 64:
                self._days.clear()
            made = (self._instance(spec, day) for spec in self.specs)
            cached = tuple(sorted((i for i in made if i.end > i.start), key=lambda i: i.start))
            self._days[day] = cached
        return cached

    def _around(self, instant: datetime) -> Iterator[ShiftInstance]:
        local_day = instant.astimezone(self.zone).date()
        for delta in (-1, 0, 1):
            yield from self.instances_on(local_day + timedelta(days=delta))

    def shift_at(self, instant: datetime) -> ShiftInstance | None:
        """The shift running at `instant`, or None when it falls outside every shift."""
        for instance in self._around(instant):
            if instance.contains(instant):
                return instance
        return None

    def next_start_after(self, instant: datetime) -> datetime | None:
        """The start of the first shift after `instant` (within the next two days)."""
        starts = [i.start for i in self._around(instant) if i.start > instant]
        return min(starts) if starts else None
