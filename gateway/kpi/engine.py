"""The KPI engine: OEE per machine and shift from the readings of its tags (pure: readings and
instants in, figures out; no I/O, no clock of its own).

Time is accounted in slices between two updates of a machine (`observe` with its readings, or
`tick`/`figures`). A slice belongs to the running state held at its start: running, stopped or
unknown. Unknown is the running tag not good (device down, bad quality), a running tag not read
for longer than the machine's `stale_after`, or a gap between two updates longer than
`max_gap` (the gateway was not running or stalled); the time of a shift before the engine first
saw it is unknown too. Slices are cut at shift boundaries; time outside every shift and, while
not running, time inside a break accumulates nothing of run, stop or unknown.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any

from gateway.kpi.config import KpiSettings, OeeConfig
from gateway.kpi.counters import counter_delta
from gateway.kpi.shifts import ShiftCalendar, ShiftInstance
from gateway.models import Quality, Reading, good_reading

STATE_VERSION = 1
RECENT_SHIFTS = 16


class RunState(Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class MachineKpi:
    """What the engine needs to know about one device with an `oee:` block.

    `tag_types` maps tag names to data types ("uint16", ...): a counter's type decides what is a
    wrap. `stale_after` (seconds): a running state not confirmed by a reading for this long
    becomes unknown; give about 3 poll intervals for a polled device, None for one that reports
    only changes (OPC UA subscriptions), whose state holds until the next reading.
    """

    device: str
    oee: OeeConfig
    tag_types: Mapping[str, str] = field(default_factory=dict)
    stale_after: float | None = None


@dataclass
class ShiftTotals:
    """What one machine accumulated in one shift so far: seconds and parts."""

    run: float = 0.0
    stop: float = 0.0
    unknown: float = 0.0
    planned_stop: float = 0.0
    total: int = 0
    reject: int = 0
    good: int = 0

    def add_time(self, shift: ShiftInstance, begin: datetime, end: datetime,
                 state: RunState) -> None:
        length = (end - begin).total_seconds()
        if state is RunState.RUNNING:
            self.run += length  # running through a break is production time
            return
        in_break = shift.break_seconds(begin, end) if shift.breaks else 0.0
        self.planned_stop += in_break
        if state is RunState.STOPPED:
            self.stop += length - in_break
        else:
            self.unknown += length - in_break


@dataclass(frozen=True)
class ShiftFigures:
    """The published KPIs of one machine over one shift so far (ratios None: no denominator)."""

    shift: str
    total: int
    good: int
    reject: int
    run_seconds: float
    planned_seconds: float
    unknown_seconds: float
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None

    def readings(self, device: str, ts: datetime) -> list[Reading]:
        values: list[tuple[str, Any, str | None]] = [
            ("oee", self.oee, None), ("oee_availability", self.availability, None),
            ("oee_performance", self.performance, None), ("oee_quality", self.quality, None),
            ("oee_total_count", self.total, None), ("oee_good_count", self.good, None),
            ("oee_reject_count", self.reject, None), ("oee_run_seconds", self.run_seconds, "s"),
            ("oee_planned_seconds", self.planned_seconds, "s"),
            ("oee_unknown_seconds", self.unknown_seconds, "s"), ("oee_shift", self.shift, None),
        ]
        return [good_reading(device, tag, value, ts, unit) for tag, value, unit in values]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def compute_figures(label: str, totals: ShiftTotals, oee: OeeConfig) -> ShiftFigures:
    """KPIs from accumulated totals. OEE is good parts x ideal cycle time / planned time, which
    equals availability x performance x quality whenever all three are defined, and is 0 (not
    null) for a machine that had planned time and made no good part."""
    total = totals.total
    if oee.good_count is not None:
        good = min(totals.good, total)
        reject = total - good
    else:
        reject = min(totals.reject, total)
        good = total - reject
    planned = totals.run + totals.stop
    return ShiftFigures(
        shift=label, total=total, good=good, reject=reject,
        run_seconds=round(totals.run, 3), planned_seconds=round(planned, 3),
        unknown_seconds=round(totals.unknown, 3),
        availability=_ratio(totals.run, planned),
        performance=_ratio(oee.ideal_cycle_time * total, totals.run),
        quality=_ratio(good, total),
        oee=_ratio(good * oee.ideal_cycle_time, planned),
    )


def running_state(reading: Reading, values: frozenset[Any] | None) -> RunState:
    """The running tag's reading as a state: a bool (or a number, non-zero running) when no
    state codes are configured, else running when the value is one of them."""
    value = reading.value
    if reading.quality is not Quality.GOOD or value is None:
        return RunState.UNKNOWN
    if values is not None:
        try:
            return RunState.RUNNING if value in values else RunState.STOPPED
        except TypeError:  # an unhashable value cannot be a state code
            return RunState.UNKNOWN
    if isinstance(value, bool | int | float):
        return RunState.RUNNING if value else RunState.STOPPED
    return RunState.UNKNOWN


def counter_value(reading: Reading) -> int | None:
    """A counter reading's value as an int, or None when it is not good or not a number."""
    value = reading.value
    if reading.quality is not Quality.GOOD or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _totals_from(saved: Mapping[str, Any]) -> ShiftTotals:
    totals = ShiftTotals(**saved)
    for name, value in asdict(totals).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} is {value!r}")
    return totals


class _Machine:
    """The engine's mutable state of one machine."""

    def __init__(self, spec: MachineKpi) -> None:
        self.spec = spec
        self.oee = spec.oee
        self.counter_tags = {"total": spec.oee.total_count}
        if spec.oee.reject_count is not None:
            self.counter_tags["reject"] = spec.oee.reject_count
        if spec.oee.good_count is not None:
            self.counter_tags["good"] = spec.oee.good_count
        self.roles: dict[str, list[str]] = {}
        for role, tag in [("running", spec.oee.running.tag), *self.counter_tags.items()]:
            self.roles.setdefault(tag, []).append(role)
        values = spec.oee.running.values
        self.running_values = frozenset(values) if values is not None else None
        self.state = RunState.UNKNOWN
        self.state_at: datetime | None = None
        self.last: datetime | None = None
        self.shift: ShiftInstance | None = None
        self.totals = ShiftTotals()
        self.counters: dict[str, int] = {}
        self.recent: deque[ShiftFigures] = deque(maxlen=RECENT_SHIFTS)


class KpiEngine:
    """OEE per machine and shift. Feed it every driver reading with `observe` (before any
    deadband filter: an unchanged running tag must still be seen), call `tick` every
    `kpi_interval` and publish what it returns; `snapshot` is what to persist."""

    def __init__(self, settings: KpiSettings, machines: Iterable[MachineKpi], *,
                 restored: Mapping[str, Any] | None = None, max_gap: float | None = None,
                 calendar: ShiftCalendar | None = None) -> None:
        self.calendar = calendar or settings.calendar()
        self.max_gap = max_gap if max_gap is not None else 3 * settings.kpi_interval
        self._machines = {m.device: _Machine(m) for m in machines}
        self._pending: list[Reading] = []
        self.restore_problems: list[str] = []
        for device, state in (restored or {}).items():
            machine = self._machines.get(device)
            if machine is not None:
                self._restore(machine, state)

    @property
    def devices(self) -> list[str]:
        return list(self._machines)

    # -- input ---------------------------------------------------------------------------------

    def observe(self, readings: Iterable[Reading], now: datetime) -> None:
        """Take the readings of a poll (any devices; tags the engine does not use are skipped).
        Time up to `now` is accounted to the state held before these readings."""
        advanced: set[str] = set()
        for reading in readings:
            machine = self._machines.get(reading.device)
            if machine is None:
                continue
            roles = machine.roles.get(reading.tag)
            if roles is None:
                continue
            if reading.device not in advanced:
                self._advance(machine, now)
                advanced.add(reading.device)
            for role in roles:
                self._apply(machine, role, reading, now)

    def _apply(self, machine: _Machine, role: str, reading: Reading, now: datetime) -> None:
        if role == "running":
            machine.state = running_state(reading, machine.running_values)
            machine.state_at = now
            return
        value = counter_value(reading)
        if value is None:
            return  # parts made meanwhile are counted at the next good value
        tag = machine.counter_tags[role]
        delta = counter_delta(machine.counters.get(role), value, machine.spec.tag_types.get(tag))
        machine.counters[role] = value
        if machine.shift is not None and machine.shift.contains(now):
            setattr(machine.totals, role, getattr(machine.totals, role) + delta)

    # -- output --------------------------------------------------------------------------------

    def tick(self, now: datetime) -> list[Reading]:
        """Every `kpi_interval`: the final figures of each shift that ended since the last call
        (stamped at the shift's end), then the current figures of every machine in a shift."""
        current: list[Reading] = []
        for device, machine in self._machines.items():
            self._advance(machine, now)
            figures = self._current(machine)
            if figures is not None:
                current.extend(figures.readings(device, now))
        ended, self._pending = self._pending, []
        return ended + current

    def figures(self, device: str, now: datetime) -> list[Reading]:
        """The current shift's figures of one device as readings ([] outside every shift).
        Figures of a shift that ends on the way are kept for the next `tick`."""
        figures = self.shift_figures(device, now)
        return figures.readings(device, now) if figures is not None else []

    def shift_figures(self, device: str, now: datetime) -> ShiftFigures | None:
        """The current shift's figures of one device (None outside every shift)."""
        machine = self._machines[device]
        self._advance(machine, now)
        return self._current(machine)

    def current_figures(self, device: str) -> ShiftFigures | None:
        """The current shift's figures as of the device's last update (read-only)."""
        return self._current(self._machines[device])

    def recent_shifts(self, device: str) -> list[ShiftFigures]:
        """The final figures of the last ended shifts of a device, newest first (since start)."""
        return list(reversed(self._machines[device].recent))

    def _current(self, machine: _Machine) -> ShiftFigures | None:
        if machine.shift is None:
            return None
        return compute_figures(machine.shift.label, machine.totals, machine.oee)

    # -- time ----------------------------------------------------------------------------------

    def _advance(self, machine: _Machine, now: datetime) -> None:
        last = machine.last
        machine.last = now
        if last is not None and now > last:
            for begin, end, state in self._slices(machine, last, now):
                self._accumulate(machine, begin, end, state)
        self._enter(machine, now)

    def _slices(self, machine: _Machine, begin: datetime,
                end: datetime) -> list[tuple[datetime, datetime, RunState]]:
        if (end - begin).total_seconds() > self.max_gap:
            return [(begin, end, RunState.UNKNOWN)]
        state, stale_after = machine.state, machine.spec.stale_after
        if state is RunState.UNKNOWN or stale_after is None or machine.state_at is None:
            return [(begin, end, state)]
        stale_at = machine.state_at + timedelta(seconds=stale_after)
        if stale_at >= end:
            return [(begin, end, state)]
        cut = max(begin, stale_at)
        return [(begin, cut, state), (cut, end, RunState.UNKNOWN)]

    def _accumulate(self, machine: _Machine, begin: datetime, end: datetime,
                    state: RunState) -> None:
        instant = begin
        while instant < end:
            shift = self._enter(machine, instant)
            if shift is None:
                following = self.calendar.next_start_after(instant)
                if following is None or following >= end:
                    return
                instant = following
                continue
            until = min(end, shift.end)
            machine.totals.add_time(shift, instant, until, state)
            instant = until

    def _enter(self, machine: _Machine, instant: datetime) -> ShiftInstance | None:
        """Make the machine's shift the one at `instant`: finish the one that ended, open the
        next (its time before `instant`, not seen by the engine, is unknown)."""
        current = machine.shift
        if current is not None and current.contains(instant):
            return current
        if current is not None:
            self._finish(machine, current)
        shift = self.calendar.shift_at(instant)
        machine.shift = shift
        machine.totals = ShiftTotals()
        if shift is not None and instant > shift.start:
            machine.totals.add_time(shift, shift.start, instant, RunState.UNKNOWN)
        return shift

    def _finish(self, machine: _Machine, shift: ShiftInstance) -> None:
        figures = compute_figures(shift.label, machine.totals, machine.oee)
        machine.recent.append(figures)
        self._pending.extend(figures.readings(machine.spec.device, shift.end))

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per device, a JSON-able state that resumes the shift's figures after a restart."""
        return {device: self._state_of(machine) for device, machine in self._machines.items()}

    @staticmethod
    def _state_of(machine: _Machine) -> dict[str, Any]:
        shift = machine.shift
        return {
            "version": STATE_VERSION,
            "last": machine.last.isoformat() if machine.last else None,
            "shift": None if shift is None else {
                "name": shift.name, "day": shift.day.isoformat(),
                "start": shift.start.isoformat()},
            "totals": asdict(machine.totals),
            "counters": {machine.counter_tags[role]: value
                         for role, value in machine.counters.items()},
        }

    def _restore(self, machine: _Machine, state: Any) -> None:
        device = machine.spec.device
        try:
            if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
                raise ValueError("unknown state format")
            last = datetime.fromisoformat(state["last"]) if state.get("last") else None
            counters = state.get("counters") or {}
            for role, tag in machine.counter_tags.items():
                if isinstance(counters.get(tag), int) and not isinstance(counters[tag], bool):
                    machine.counters[role] = counters[tag]
            shift = self._restored_shift(state.get("shift"))
            totals = _totals_from(state["totals"]) if shift is not None else ShiftTotals()
        except (KeyError, TypeError, ValueError) as exc:
            machine.counters.clear()
            self.restore_problems.append(f"{device}: saved KPI state not resumed ({exc})")
            return
        if state.get("shift") is not None and shift is None:
            self.restore_problems.append(f"{device}: saved shift is not in the shift plan any "
                                         "more; its figures are not resumed")
        if last is not None and last.tzinfo is None:
            last = None
        machine.last, machine.shift, machine.totals = last, shift, totals

    def _restored_shift(self, saved: Any) -> ShiftInstance | None:
        if saved is None:
            return None
        start = datetime.fromisoformat(saved["start"])
        shift = self.calendar.shift_at(start)
        if (shift is None or shift.start != start or shift.name != saved["name"]
                or shift.day != date.fromisoformat(saved["day"])):
            return None
        return shift
