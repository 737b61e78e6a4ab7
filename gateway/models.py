"""The one data type that flows from drivers to sinks."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

Scalar = bool | int | float | str
# An array (an OPC UA array variable) is a tuple of scalars: hashable, like the frozen Reading.
Value = Scalar | tuple[Scalar | None, ...] | None


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Reading(BaseModel):
    """One tag value at one instant. Device context (site, area, line) lives in the config."""

    model_config = ConfigDict(frozen=True)

    device: str
    tag: str
    # bool before int: pydantic's smart union keeps the exact type it is given. A list given
    # for an array becomes a tuple.
    value: bool | int | float | str | tuple[bool | int | float | str | None, ...] | None
    quality: Quality = Quality.GOOD
    source_ts: datetime
    unit: str | None = None
    error: str | None = None

    @property
    def is_array(self) -> bool:
        return isinstance(self.value, tuple)

    @field_validator("source_ts")
    @classmethod
    def _utc(cls, ts: datetime) -> datetime:
        if ts.tzinfo is UTC:  # what drivers make (utc_now): skip the conversion
            return ts
        if ts.tzinfo is None:
            raise ValueError("source_ts must be timezone-aware")
        return ts.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def bad_reading(device: str, tag: str, error: str, unit: str | None = None,
                ts: datetime | None = None) -> Reading:
    """A reading that says a tag could not be read, and why."""
    return Reading(device=device, tag=tag, value=None, quality=Quality.BAD,
                   source_ts=ts or utc_now(), unit=unit, error=error)
