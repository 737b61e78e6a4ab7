"""Between a driver and the buffer: report-by-exception with per-tag deadbands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.models import Reading


class DeadbandFilter:
    """Drops readings of tags with a deadband whose value moved no more than the deadband since
    the last published one. A change of quality (or of value type) always passes, and so does
    every reading of a tag without a deadband."""

    def __init__(self, deadbands: Mapping[tuple[str, str], float]) -> None:
        self._deadbands = dict(deadbands)
        self._last: dict[tuple[str, str], Reading] = {}

    def set_deadbands(self, deadbands: Mapping[tuple[str, str], float]) -> None:
        self._deadbands = dict(deadbands)
        self._last = {key: r for key, r in self._last.items() if key in self._deadbands}

    def apply(self, readings: Sequence[Reading]) -> list[Reading]:
        if not self._deadbands:
            return list(readings)
        return [r for r in readings if self._passes(r)]

    def _passes(self, reading: Reading) -> bool:
        key = (reading.device, reading.tag)
        deadband = self._deadbands.get(key)
        if deadband is None:
            return True
        last = self._last.get(key)
        if last is None or _moved(last, reading, deadband):
            self._last[key] = reading
            return True
        return False


def _moved(last: Reading, new: Reading, deadband: float) -> bool:
    if last.quality != new.quality:
        return True
    old, value = last.value, new.value
    numeric = (int, float)
    if (isinstance(old, numeric) and isinstance(value, numeric)
            and not isinstance(old, bool) and not isinstance(value, bool)):
        return abs(value - old) > deadband
    return old != value
