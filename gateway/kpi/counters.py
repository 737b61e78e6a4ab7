"""Parts from counter deltas: resets and integer wraps (pure, no I/O)."""

from __future__ import annotations

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
"""The integer data types a counter tag may have, and their value ranges."""


def is_wrap(previous: int, current: int, data_type: str | None) -> bool:
    """A fall from the top quarter of the type's range to its bottom quarter: the counter
    overflowed and started again at the bottom, rather than being reset."""
    bounds = INTEGER_RANGES.get(data_type or "")
    if bounds is None:
        return False
    low, high = bounds
    quarter = (high - low + 1) // 4
    return previous >= high + 1 - quarter and current < low + quarter


def counter_delta(previous: int | None, current: int, data_type: str | None) -> int:
    """Parts made between two good values of a counter.

    No previous value: nothing is known yet, 0. A counter that goes up: the difference. One that
    goes down wrapped (see `is_wrap`) or was reset, and a reset counts from zero: the new value
    is the parts made since the reset (never negative, for a signed counter reset below zero).
    """
    if previous is None or current == previous:
        return 0
    if current > previous:
        return current - previous
    if is_wrap(previous, current, data_type):
        low, high = INTEGER_RANGES[data_type or ""]
        return (high - previous) + (current - low) + 1
    return max(current, 0)
