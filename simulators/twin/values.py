"""How a twin's values move (pure, deterministic): a function of the tag and the simulated time.

Each tag gets a behaviour from what its config says about it: `counter` (names that count:
counters, totals, operating seconds), `toggle` (bools, each with its own period), `fixed`
(strings: the tag's name, cut to its length), `wave` (other numbers: a slow sine, within
`min`/`max` when given, else within a range that fits the type), `sequence` (the drill's and
the demo's `poll_sequence`: counts the reads that cover it, never moved by time).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, Literal

Behaviour = Literal["counter", "toggle", "fixed", "wave", "sequence"]
SEQUENCE_TAGS = frozenset({"poll_sequence", "drill_sequence"})
_COUNTING = re.compile(r"count|total|shots|strokes|seconds|hours|parts|pieces|pcs|meter|energy"
                       r"|sequence|number", re.IGNORECASE)
INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-2**31, 2**31 - 1),
    "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1),
    "sbyte": (-128, 127), "byte": (0, 255)}
FLOATS = frozenset({"float32", "float64"})


@dataclass(frozen=True)
class Motion:
    """What one tag does over time: its behaviour, the range it stays in and a phase of its own
    (from its name) so that the tags of a twin do not all move in step."""

    behaviour: Behaviour
    data_type: str
    low: float = 0.0
    high: float = 100.0
    length: int = 1  # characters, for strings
    text: str = ""
    phase: float = 0.0
    limited: bool = False  # min/max given


def phase_of(name: str) -> float:
    """A stable number in [0, 1) from a name (not Python's salted hash)."""
    return (zlib.crc32(name.encode()) % 10_000) / 10_000


def behaviour_of(name: str, data_type: str) -> Behaviour:
    if name in SEQUENCE_TAGS:
        return "sequence"
    if data_type == "bool":
        return "toggle"
    if data_type == "string":
        return "fixed"
    if data_type in INT_RANGES and _COUNTING.search(name):
        return "counter"
    return "wave"


def motion_for(name: str, data_type: str, *, low: float | None = None,
               high: float | None = None, length: int | None = None,
               scale: float = 1.0, offset: float = 0.0) -> Motion:
    """The motion of a tag; `low`/`high` are engineering limits (its `min`/`max`); a scaled
    integer tag gets the engineering range its registers can hold."""
    behaviour = behaviour_of(name, data_type)
    if behaviour == "counter" and (scale != 1 or offset != 0):
        behaviour = "wave"  # a scaled counter's raw registers would overflow long before
    lo, hi = _default_range(data_type, scale, offset)
    if low is not None:
        lo = low
    if high is not None:
        hi = high
    if lo > hi:
        lo, hi = hi, lo
    chars = 2 * (length or 1) if data_type == "string" else (length or 1)
    return Motion(behaviour, data_type, lo, hi, chars, _text(name, chars), phase_of(name),
                  low is not None or high is not None)


def _default_range(data_type: str, scale: float, offset: float) -> tuple[float, float]:
    """0..100 (or -50..50 for signed types) in engineering units, kept inside what the raw
    type can hold after scaling."""
    signed = data_type.startswith("int") or data_type in ("sbyte",) or data_type in FLOATS
    lo, hi = (-50.0, 50.0) if signed and data_type not in FLOATS else (0.0, 100.0)
    if data_type in FLOATS:
        lo, hi = 10.0, 90.0
    if data_type in INT_RANGES:
        raw_lo, raw_hi = INT_RANGES[data_type]
        ends = sorted((raw_lo * scale + offset, raw_hi * scale + offset))
        lo, hi = max(lo, ends[0]), min(hi, ends[1])
    return lo, hi


def _text(name: str, chars: int) -> str:
    text = re.sub(r"[^A-Za-z0-9-]", "-", name).upper()
    return text[:chars]


def value_at(motion: Motion, t: float) -> Any:
    """The engineering value at simulated time `t` (seconds)."""
    if motion.behaviour == "fixed":
        return motion.text
    if motion.behaviour == "toggle":
        period = 4.0 + 16.0 * motion.phase  # 4..20 s
        return ((t / period) + motion.phase) % 1.0 < 0.5
    if motion.behaviour == "sequence":
        return 0
    if motion.behaviour == "counter":
        return _counter(motion, t)
    middle, half = (motion.low + motion.high) / 2, (motion.high - motion.low) / 2
    value = middle + 0.9 * half * math.sin(2 * math.pi * (t / 60.0 + motion.phase))
    if motion.data_type in INT_RANGES:
        return max(math.ceil(motion.low), min(math.floor(motion.high), round(value)))
    return max(motion.low, min(motion.high, round(value, 2)))


def _counter(motion: Motion, t: float) -> int:
    """Counts up about once a second from a start inside the range, and wraps at its top."""
    lo, hi = math.ceil(max(motion.low, 0)), math.floor(motion.high)
    if not motion.limited or hi <= lo:  # no limits given: count freely
        lo, hi = 0, INT_RANGES[motion.data_type][1]
    start = lo + int(motion.phase * 1000) % max(1, min(hi - lo, 1000))
    return lo + (start - lo + int(t)) % (hi - lo + 1)
