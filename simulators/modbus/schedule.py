"""A machine's production schedule (pure, deterministic under a seed): which of running,
stopped (with a reason code) or faulted it is at a simulated instant, and how many parts and
rejects it has made by then, so that a test knows the OEE the gateway must compute.

A schedule is a cycle of segments repeated forever. While running, a machine makes one part
every `cycle_time` seconds of the segment (a part is counted when its cycle completes); in a
segment with `reject_every: n`, every n-th part of that segment is a reject. Stopped and faulted
segments make nothing and carry a reason code (0 while running).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

RUNNING, STOPPED, FAULT = "running", "stopped", "fault"
STATES = (RUNNING, STOPPED, FAULT)
# The reason codes of the simulated machines' `stop_reason` register (and its enum texts).
REASONS = {0: "running", 1: "no material", 2: "changeover", 3: "no operator",
           11: "jam", 12: "overload"}
STOP_REASONS, FAULT_REASONS = (1, 2, 3), (11, 12)


class ScheduleError(ValueError):
    """A segment or schedule that cannot describe production."""


@dataclass(frozen=True)
class Segment:
    """A stretch of `seconds` in one state; `reason` says why a machine is not running."""

    seconds: float
    state: str = RUNNING
    reason: int = 0
    reject_every: int = 0  # 0: no rejects; n: every n-th part of the segment is a reject

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ScheduleError(f"a segment lasts more than 0 s, not {self.seconds}")
        if self.state not in STATES:
            raise ScheduleError(f"unknown state {self.state!r}: {', '.join(STATES)}")
        if (self.state == RUNNING) != (self.reason == 0):
            raise ScheduleError("reason 0 exactly while running")
        if self.reject_every < 0:
            raise ScheduleError("reject_every is 0 (none) or a part count")


@dataclass(frozen=True)
class Moment:
    """What a machine on its schedule is doing at one instant, and what it made until then."""

    state: str
    reason: int
    parts: int
    rejects: int
    run_seconds: float  # time spent running so far

    @property
    def running(self) -> bool:
        return self.state == RUNNING


def _made(segment: Segment, elapsed: float, cycle_time: float) -> tuple[int, int]:
    """Parts and rejects of `elapsed` seconds into a segment."""
    if segment.state != RUNNING:
        return 0, 0
    # A whisker of tolerance: 10 s at 0.5 s per part is 20 parts, not 19 from float rounding.
    parts = int(min(elapsed, segment.seconds) / cycle_time + 1e-9)
    return parts, parts // segment.reject_every if segment.reject_every else 0


class Schedule:
    """A repeated cycle of segments for a machine that makes a part every `cycle_time` s."""

    def __init__(self, segments: list[Segment] | tuple[Segment, ...], cycle_time: float) -> None:
        if not segments:
            raise ScheduleError("a schedule needs at least one segment")
        if cycle_time <= 0:
            raise ScheduleError(f"cycle_time is more than 0 s, not {cycle_time}")
        self.segments = tuple(segments)
        self.cycle_time = cycle_time
        self.period = sum(s.seconds for s in self.segments)
        totals = [_made(s, s.seconds, cycle_time) for s in self.segments]
        self._cycle_parts = sum(p for p, _ in totals)
        self._cycle_rejects = sum(r for _, r in totals)
        self._cycle_run = sum(s.seconds for s in self.segments if s.state == RUNNING)

    def at(self, t: float) -> Moment:
        """The moment at simulated time `t` (before 0: the first segment, nothing made yet)."""
        if t <= 0:
            first = self.segments[0]
            return Moment(first.state, first.reason, 0, 0, 0.0)
        cycles, into = divmod(t, self.period)
        parts, rejects = int(cycles) * self._cycle_parts, int(cycles) * self._cycle_rejects
        run = cycles * self._cycle_run
        for segment in self.segments:
            if into < segment.seconds:
                made, bad = _made(segment, into, self.cycle_time)
                run += into if segment.state == RUNNING else 0.0
                return Moment(segment.state, segment.reason, parts + made, rejects + bad, run)
            made, bad = _made(segment, segment.seconds, self.cycle_time)
            parts, rejects = parts + made, rejects + bad
            run += segment.seconds if segment.state == RUNNING else 0.0
            into -= segment.seconds
        last = self.segments[-1]  # only float rounding at the very end of a cycle lands here
        return Moment(last.state, last.reason, parts, rejects, run)


@cache
def seeded_schedule(seed: int, name: str, cycle_time: float, count: int = 12) -> Schedule:
    """A plausible shift pattern for one machine, the same for the same seed and name: runs of
    15-60 s (some with a quality problem: every 5th part rejected, else every 40th), stops of
    5-20 s with a stop reason, and now and then a fault of 5-15 s. Short enough that a demo's
    OEE moves within a minute."""
    rng = random.Random(f"schedule:{seed}:{name}")
    segments: list[Segment] = []
    for _ in range(count):
        reject_every = 5 if rng.random() < 0.2 else 40
        segments.append(Segment(rng.uniform(15, 60), RUNNING, 0, reject_every))
        if rng.random() < 0.25:
            segments.append(Segment(rng.uniform(5, 15), FAULT, rng.choice(FAULT_REASONS)))
        else:
            segments.append(Segment(rng.uniform(5, 20), STOPPED, rng.choice(STOP_REASONS)))
    return Schedule(segments, cycle_time)
