"""Configuration of the edge KPIs: the gateway-level shift plan and a device's `oee:` block.

The models are self-contained (no import of `gateway.config`), so that `gateway.config` can
import them: `GatewaySettings` takes the `KpiSettings` fields, `DeviceConfig` an optional
`oee: OeeConfig`.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from gateway.kpi.counters import INTEGER_RANGES
from gateway.kpi.shifts import ShiftCalendar, ShiftSpec, break_problems, overlapping_shifts
from gateway.strict import StrictModel
from gateway.units import Duration

KPI_TAGS = ("oee", "oee_availability", "oee_performance", "oee_quality", "oee_total_count",
            "oee_good_count", "oee_reject_count", "oee_run_seconds", "oee_planned_seconds",
            "oee_unknown_seconds", "oee_shift")
"""The tags the KPI engine publishes for a device with an `oee:` block."""

_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_clock(value: Any) -> time:
    """A local wall-clock time from "HH:MM" (or "HH:MM:SS"); "24:00" is midnight."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 14:00 as the base-60 number 840.
        raise ValueError('write times in quotes, e.g. "14:00" (YAML reads an unquoted 14:00 '
                         "as a number)")
    match = _CLOCK.match(str(value)) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'invalid time {value!r}: use "HH:MM", e.g. "06:00"')
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    if (hour, minute, second) == (24, 0, 0):
        return time(0, 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid time {value!r}: hours 00-23, minutes 00-59")
    return time(hour, minute, second)


class BreakConfig(StrictModel):
    start: time = Field(description='Local time the planned stop begins, e.g. "10:00"')
    end: time = Field(description='Local time it ends, e.g. "10:15"')

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> time:
        return parse_clock(value)


class ShiftConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^\S+$",
                      description="Shift name, published in oee_shift (no spaces)")
    start: time = Field(description='Local start time, e.g. "06:00"')
    end: time = Field(description='Local end time; not after start: the shift runs across '
                      'midnight; equal to start: a whole day')
    breaks: list[BreakConfig] = Field(
        default_factory=list, description="Planned stops (breaks) inside the shift, left out "
        "of planned time unless the machine runs through them")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> time:
        return parse_clock(value)

    @model_validator(mode="after")
    def _breaks_inside(self) -> ShiftConfig:
        problems = break_problems(self.spec())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def spec(self) -> ShiftSpec:
        return ShiftSpec(self.name, self.start, self.end,
                         tuple((b.start, b.end) for b in self.breaks))


def _default_shifts() -> list[ShiftConfig]:
    return [ShiftConfig(name="day", start=time(0), end=time(0))]


class KpiSettings(StrictModel):
    """The gateway-level keys of the edge KPIs (`gateway.timezone`, `.shifts`, `.kpi_interval`)."""

    timezone: str = Field("UTC", description="IANA time zone of the shift plan, e.g. "
                          "Europe/Berlin or Asia/Seoul; shifts are local time in it")
    shifts: list[ShiftConfig] = Field(
        default_factory=_default_shifts, min_length=1,
        description='Shift plan; default one shift a day, "day", "00:00"-"00:00". Time outside '
        "every shift is not planned and accumulates nothing")
    kpi_interval: Duration = Field(10.0, gt=0, description="How often the running KPI figures "
                                   "are published, e.g. 10s")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}: use an IANA name such as "
                             "Europe/Berlin, Asia/Seoul or UTC") from None
        return name

    @field_validator("shifts")
    @classmethod
    def _plan_consistent(cls, shifts: list[ShiftConfig]) -> list[ShiftConfig]:
        names = [s.name for s in shifts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate shift names: {', '.join(duplicates)}")
        overlaps = overlapping_shifts([s.spec() for s in shifts])
        if overlaps:
            raise ValueError("overlapping shifts: " + ", ".join(
                f"{first} and {second}" for first, second in overlaps))
        return shifts

    def calendar(self) -> ShiftCalendar:
        return ShiftCalendar(self.timezone, [s.spec() for s in self.shifts])


class RunningConfig(StrictModel):
    tag: str = Field(min_length=1, description="Tag that says whether the machine runs")
    values: list[bool | int | str] | None = Field(
        None, min_length=1, description="State codes that mean running (for a state tag); "
        "left out: the tag is a bool, true means running")


class OeeConfig(StrictModel):
    """A device's `oee:` block: which of its tags say running, parts and rejects."""

    running: RunningConfig = Field(description="{tag: running} or {tag: state, values: [1, 2]}")
    total_count: str = Field(min_length=1, description="Counter tag counting every part made")
    reject_count: str | None = Field(None, min_length=1,
                                     description="Counter tag of rejected parts")
    good_count: str | None = Field(None, min_length=1,
                                   description="Counter tag of good parts (instead of "
                                   "reject_count)")
    ideal_cycle_time: Duration = Field(gt=0, description="The design's time per part, e.g. 2s")

    @model_validator(mode="after")
    def _one_of_reject_good(self) -> OeeConfig:
        if (self.reject_count is None) == (self.good_count is None):
            raise ValueError("give exactly one of reject_count or good_count")
        return self

    def counter_tags(self) -> dict[str, str]:
        """Key in this block -> tag name, for each counter it names."""
        keys = {"total_count": self.total_count, "reject_count": self.reject_count,
                "good_count": self.good_count}
        return {key: tag for key, tag in keys.items() if tag is not None}


_INTEGER_NAMES = " ".join(INTEGER_RANGES)


def oee_tag_problems(oee: OeeConfig, tag_types: dict[str, str]) -> list[tuple[str, str]]:
    """(key path inside the `oee:` block, message) for each tag the block names wrongly.

    `tag_types` maps the device's tag names to their data type ("uint16", "bool", ...); an
    empty type means the driver learns it only when reading (an OPC UA node without a declared
    type) and is not checked.
    """
    problems: list[tuple[str, str]] = []
    running = oee.running.tag
    if running not in tag_types:
        problems.append(("running.tag", f"no tag named {running!r} on this device"))
    elif oee.running.values is None and tag_types[running] not in ("", "bool"):
        problems.append(("running.tag", f"tag {running!r} is {tag_types[running]}, not bool: "
                         "give `values:` (the state codes that mean running)"))
    for key, tag in oee.counter_tags().items():
        if tag not in tag_types:
            problems.append((key, f"no tag named {tag!r} on this device"))
        elif tag_types[tag] not in ("", *INTEGER_RANGES):
            problems.append((key, f"tag {tag!r} is {tag_types[tag]}: a counter must be an "
                             f"integer type ({_INTEGER_NAMES})"))
    for tag in sorted(set(tag_types) & set(KPI_TAGS)):
        problems.append(("", f"tag {tag!r} has the name of a KPI the gateway publishes for "
                         "this device: rename it"))
    return problems


def validate_oee_against_tags(oee: OeeConfig, tag_types: dict[str, str]) -> list[str]:
    """The problems of `oee_tag_problems` as "key: message" lines."""
    return [f"{key}: {message}" if key else message
            for key, message in oee_tag_problems(oee, tag_types)]
