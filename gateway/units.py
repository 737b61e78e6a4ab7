"""Durations ("250ms", "1s", "5m") and sizes ("512MiB") as the config writes them."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_BYTES = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


def parse_duration(text: Any) -> float:
    """Seconds from "250ms", "1.5s", "5m", "2h", "1d"; a bare number means seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 250ms, 1s or 5m")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"invalid duration {text!r}: use e.g. 250ms, 1s, 5m, 2h")
        seconds = float(match[1]) * _DURATION_SECONDS[match[2] or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(text: Any) -> int:
    """Bytes from "512MiB", "1GiB", "10MB"; a bare number means bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 512MiB or 1GiB")
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"invalid size {text!r}: use e.g. 512MiB, 1GiB, 10MB")
    return int(float(match[1]) * _SIZE_BYTES[match[2] or "B"])


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
