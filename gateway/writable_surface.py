"""What `gateway check --writable` prints: every tag a command may write, with the limits a
write must respect, and a warning for each numeric writable tag without both `min` and `max`
(an unbounded setpoint lets any client with topic rights send the PLC any value)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.base import TagConfig


@dataclass(frozen=True)
class WritableTag:
    device: str
    tag: TagConfig


def writable_tags(devices: Iterable[object]) -> list[WritableTag]:
    """The writable tags of every device whose config declares its tags."""
    found = []
    for device in devices:
        declared: Sequence[TagConfig] = getattr(device, "declared_tags", lambda: ())()
        found += [WritableTag(str(getattr(device, "name", "?")), tag)
                  for tag in declared if getattr(tag, "writable", False)]
    return found


def _is_bool(tag: TagConfig) -> bool:
    return getattr(tag, "type", None) == "bool"


def limits_of(tag: TagConfig) -> str:
    """The values a write may carry, in words: `true|false`, the enumeration, or min..max."""
    if _is_bool(tag):
        return "allowed: true|false"
    if tag.enum:
        return "allowed: " + ", ".join(f"{key} ({text})" for key, text in sorted(tag.enum.items()))
    low, high = getattr(tag, "min", None), getattr(tag, "max", None)
    unit = f" {tag.unit}" if tag.unit else ""
    shown = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
    return f"range: {shown}{unit}"


def unbounded(entry: WritableTag) -> bool:
    """Numeric, not an enumeration, and missing min or max."""
    tag = entry.tag
    if _is_bool(tag) or tag.enum or getattr(tag, "type", None) == "string":
        return False
    return getattr(tag, "min", None) is None or getattr(tag, "max", None) is None


def describe(entries: Sequence[WritableTag], command_sinks: Sequence[str]) -> list[str]:
    """One line per writable tag, then who accepts commands (or that nobody does)."""
    if not entries:
        return ["writable: none (no tag has writable: true)"]
    lines = [f"writable: {len(entries)} tag(s)"]
    for entry in entries:
        interval = entry.tag.min_write_interval * 1000
        lines.append(f"  {entry.device}.{entry.tag.name}: {limits_of(entry.tag)}, "
                     f"min_write_interval {interval:.0f}ms")
    if command_sinks:
        lines.append(f"  commands accepted on sink(s): {', '.join(command_sinks)}")
    else:
        lines.append("  no sink has commands: true, so nothing is written yet")
    return lines


def warnings(entries: Sequence[WritableTag]) -> list[str]:
    """A warning per writable numeric tag that lacks a lower or upper bound."""
    return [f"{entry.device}.{entry.tag.name} is writable without min/max: any value a client "
            "sends goes to the PLC (add min and max)" for entry in entries if unbounded(entry)]
