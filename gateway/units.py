"""Durations ("250ms", "1s", "5m") and sizes ("512MiB") as the config writes them."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
MAX_DURATION = 365 * 86400.0
_DURATION_EXAMPLES = "use e.g. 250ms, 1s, 5m, 2h"
_SIZE_BYTES = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


def parse_duration(text: Any) -> float:
    """Seconds from "250ms", "1.5s", "5m", "2h", "1d"; a bare number means seconds.

    Messages never repeat the value: it may be a password pasted into the wrong key."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"expected a duration: {_DURATION_EXAMPLES}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"not a duration: {_DURATION_EXAMPLES}")
        seconds = float(match[1]) * _DURATION_SECONDS[match[2] or "s"]
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number: {_DURATION_EXAMPLES}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise ValueError("a duration longer than 365d is surely a typo")
    return seconds


def parse_size(text: Any) -> int:
    """Bytes from "512MiB", "1GiB", "10MB"; a bare whole number means bytes.

    A fraction of a byte is refused (`max_size: 1.5` meant one byte): it needs a unit."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError("expected a size such as 512MiB or 1GiB")
    if isinstance(text, int | float):
        number, unit = float(text), ""
    else:
        match = _SIZE.match(text)
        if not match:
            raise ValueError("not a size: use e.g. 512MiB, 1GiB, 10MB")
        number, unit = float(match[1]), match[2] or ""
    if not math.isfinite(number) or number < 0:
        raise ValueError("a size must be a finite, positive number: use e.g. 512MiB, 1GiB")
    if unit in ("", "B") and number != int(number):
        raise ValueError("a size with a fraction needs a unit (e.g. 1.5GiB): "
                         "a bare number means bytes")
    if isinstance(text, int):
        return text
    return int(number * _SIZE_BYTES[unit or "B"])


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": ["string", "number"], "pattern": r"^\d+(\.\d+)?\s*(ms|s|m|h|d)?$",
                    "examples": ["250ms", "1s", "5m"]}),
]
"""Seconds, written in YAML as a duration string."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"type": ["string", "integer"], "examples": ["512MiB", "1GiB"]}),
]
"""Bytes, written in YAML as a size string."""
