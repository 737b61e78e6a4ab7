"""Pure layout of the live view: which tag rows fit a terminal, in which order, with which
names. No terminal, no clock: rows and a size in, lines out (rendered by gateway.live)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ELLIPSIS = "…"
QUALITY_ORDER = {"bad": 0, "uncertain": 1, "good": 2}
MIN_NAME_WIDTH = 6
SEPARATOR = " · "


@dataclass(frozen=True)
class TagRow:
    """One tag as the view shows it (value already formatted)."""

    device: str
    tag: str
    value: str
    unit: str
    quality: str
    time: str


@dataclass
class ViewState:
    """What the keys change: the page, bad-only, one device (None: all)."""

    page: int = 0
    bad_only: bool = False
    device: str | None = None
    devices: list[str] = field(default_factory=list)

    def key(self, char: str) -> bool:
        """Apply one key press; False when the key means nothing here."""
        if char in ("n", " ", "j"):
            self.page += 1
        elif char in ("p", "k"):
            self.page = max(0, self.page - 1)
        elif char == "b":
            self.bad_only, self.page = not self.bad_only, 0
        elif char == "d":
            self.device, self.page = _next_device(self.device, self.devices), 0
        elif char == "a":
            self.device, self.bad_only, self.page = None, False, 0
        else:
            return False
        return True


def _next_device(current: str | None, devices: Sequence[str]) -> str | None:
    """All -> first device -> ... -> last device -> all."""
    if not devices:
        return None
    if current not in devices:
        return devices[0]
    index = devices.index(current) + 1
    return devices[index] if index < len(devices) else None


def shorten_middle(name: str, width: int, head: int | None = None) -> str:
    """`name` in at most `width` characters, the middle replaced by an ellipsis; `head` is how
    many leading characters stay (default: a little more than half)."""
    if len(name) <= width:
        return name
    if width <= 1:
        return name[:width]
    keep = width - 1
    head = (keep + 1) // 2 if head is None else max(0, min(head, keep))
    tail = keep - head
    return name[:head] + ELLIPSIS + (name[len(name) - tail:] if tail else "")


def distinct_names(names: Iterable[str], width: int) -> dict[str, str]:
    """Each name shortened to `width` so that different names stay different: the ellipsis
    moves (away from the middle) until the names it would merge differ, and a name that still
    collides gets a `~N` suffix."""
    unique = sorted(set(names))
    short = {name: shorten_middle(name, width) for name in unique}
    for group in _collisions(short):
        _separate(group, short, width)
    for group in _collisions(short):
        for number, name in enumerate(group, 1):
            mark = f"~{number}"
            short[name] = shorten_middle(name, max(1, width - len(mark))) + mark
    return short


def _collisions(short: dict[str, str]) -> list[list[str]]:
    by_short: dict[str, list[str]] = {}
    for name, shown in short.items():
        by_short.setdefault(shown, []).append(name)
    return [group for group in by_short.values() if len(group) > 1]


def _separate(group: list[str], short: dict[str, str], width: int) -> None:
    """Find one ellipsis position that tells every name of `group` apart, nearest the middle."""
    keep = width - 1
    middle = (keep + 1) // 2
    taken = {shown for name, shown in short.items() if name not in group}
    for head in sorted(range(keep + 1), key=lambda h: (abs(h - middle), h)):
        candidate = {name: shorten_middle(name, width, head) for name in group}
        shown = set(candidate.values())
        if len(shown) == len(group) and not shown & taken:
            short.update(candidate)
            return


def order_rows(rows: Iterable[TagRow]) -> list[TagRow]:
    """Bad first, then uncertain, then good; by device and tag within each."""
    return sorted(rows, key=lambda r: (QUALITY_ORDER.get(r.quality, 0), r.device, r.tag))


def select_rows(rows: Iterable[TagRow], state: ViewState) -> list[TagRow]:
    """The rows the filters let through, ordered."""
    kept = [r for r in rows if (state.device is None or r.device == state.device)
            and (not state.bad_only or r.quality != "good")]
    return order_rows(kept)


@dataclass(frozen=True)
class Page:
    rows: list[TagRow]
    number: int  # 0-based, clamped
    count: int


def paginate(rows: Sequence[TagRow], per_page: int, page: int) -> Page:
    """Page `page` (clamped to the last one) of `per_page` rows."""
    per_page = max(1, per_page)
    count = max(1, -(-len(rows) // per_page))
    number = min(max(0, page), count - 1)
    return Page(list(rows[number * per_page:(number + 1) * per_page]), number, count)


def pack(parts: Iterable[str], width: int, separator: str = SEPARATOR) -> list[str]:
    """Join `parts` into lines of at most `width`, breaking only between parts; a part longer
    than a line is shortened at its end."""
    lines: list[str] = []
    current = ""
    for part in parts:
        if len(part) > width:
            part = part[:max(0, width - 1)] + ELLIPSIS
        if current and len(current) + len(separator) + len(part) <= width:
            current += separator + part
            continue
        if current:
            lines.append(current)
        current = part
    if current:
        lines.append(current)
    return lines


@dataclass(frozen=True)
class Columns:
    """Widths of the tag table's columns at one terminal width (0: column left out)."""

    device: int
    tag: int
    value: int
    unit: int
    quality: int
    time: int


def plan_columns(width: int, rows: Sequence[TagRow]) -> Columns:
    """Give each column what it needs, the narrower the terminal the more is left out: first the
    time, then the unit; names shrink to at least MIN_NAME_WIDTH, values take the rest."""
    time = 12 if width >= 72 else 0
    unit = min(6, max([len(r.unit) for r in rows] + [4])) if width >= 56 else 0
    quality = 9
    device_need = max([len(r.device) for r in rows] + [6])
    tag_need = max([len(r.tag) for r in rows] + [3])
    gaps = sum(1 for w in (time, unit) if w) + 3  # one space between columns
    room = width - gaps - time - unit - quality
    device = max(MIN_NAME_WIDTH, min(device_need, 12, room // 4))
    value_min = 10
    tag = max(MIN_NAME_WIDTH, min(tag_need, room - device - value_min))
    value = max(4, room - device - tag)
    return Columns(device, tag, value, unit, quality, time)
