"""`gateway probe`'s pure half: which register ranges exist (exception-aware block reads), and
which byte/word order makes a multi-register value plausible.

Range scan. A block read that answers is a range that exists; one that answers exception 2
(illegal data address) has a missing address somewhere in it. The scan reads blocks; on an
exception 2 it bisects for the longest prefix that answers (the edge, in about log2(125) = 7
reads), then gallops over the gap with one-register reads at growing strides (1, 2, 4, ... up to
`stride`), and bisects back to the first address that answers. So a map of a few ranges costs
tens of reads, not one per register; a range shorter than `stride` inside a gap can be missed
(narrow `--range`, or lower the stride). Exception 1 means the table is not there; exception 3
(illegal data value) that the device takes shorter reads: the block is halved.

The scan is a generator: it yields each `Block` to read and is sent back its `Outcome`, so the
I/O (probe.py) and the tests drive the same logic.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from drivers.modbus.codec import DataType, Order, apply_scale, decode_registers
from gateway.errors import DecodeError

ORDERS: tuple[tuple[Order, Order], ...] = (("big", "big"), ("big", "little"),
                                           ("little", "big"), ("little", "little"))
_SMALLEST_NORMAL = {"float32": 1.1754943508222875e-38, "float64": 2.2250738585072014e-308}


class Outcome(Enum):
    OK = "ok"  # the block answered with data
    MISSING = "missing"  # exception 2: some address in it does not exist
    UNSUPPORTED = "unsupported"  # exception 1: no such table (function)
    TOO_LONG = "too long"  # exception 3: the device takes fewer registers per read
    FAILED = "failed"  # no answer, another exception, a wrong answer


@dataclass(frozen=True)
class Block:
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass
class ScanResult:
    ranges: list[tuple[int, int]] = field(default_factory=list)  # (first, last), inclusive
    unsupported: bool = False
    failed: list[Block] = field(default_factory=list)  # blocks that never answered clearly
    block: int = 0  # the block size the device took in the end

    def add(self, start: int, end: int) -> None:
        """Record addresses start..end-1 as existing (merged with an adjacent range)."""
        if end <= start:
            return
        if self.ranges and self.ranges[-1][1] + 1 >= start:
            first, last = self.ranges[-1]
            self.ranges[-1] = (first, max(last, end - 1))
        else:
            self.ranges.append((start, end - 1))


Scan = Generator[Block, Outcome, ScanResult]


def scan_ranges(start: int, end: int, block: int = 125, stride: int = 64) -> Scan:
    """Scan addresses start..end-1 (see the module doc). `block`: the longest read."""
    result = ScanResult(block=block)
    address = start
    while address < end:
        size = min(result.block, end - address)
        outcome = yield Block(address, size)
        if outcome is Outcome.OK:
            result.add(address, address + size)
            address += size
        elif outcome is Outcome.UNSUPPORTED:
            result.unsupported = True
            return result
        elif outcome is Outcome.TOO_LONG and result.block > 1:
            result.block = max(1, result.block // 2)
        elif outcome is Outcome.MISSING:
            edge = yield from _longest_prefix(address, size)
            result.add(address, edge)
            address = yield from _next_existing(edge, end, stride)
        else:
            result.failed.append(Block(address, size))
            address += size
    return result


def _longest_prefix(start: int, size: int) -> Generator[Block, Outcome, int]:
    """The first address of start..start+size-1 that the prefix reads say is missing (a read of
    `size` from `start` failed); bisection, assuming prefixes answer up to the edge."""
    low, high = 0, size  # [start, start+low) answers (or is empty), [start, start+high) not
    while high - low > 1:
        middle = (low + high) // 2
        if (yield Block(start, middle)) is Outcome.OK:
            low = middle
        else:
            high = middle
    return start + low


def _next_existing(missing: int, end: int, stride: int) -> Generator[Block, Outcome, int]:
    """The first address after `missing` (which does not exist) that answers a one-register
    read, or `end`: galloping strides up to `stride`, then bisecting back to the edge."""
    last_missing, step = missing, 1
    while last_missing + step < end:
        probe = last_missing + step
        if (yield Block(probe, 1)) is Outcome.OK:
            low, high = last_missing, probe  # low missing, high answers
            while high - low > 1:
                middle = (low + high) // 2
                if (yield Block(middle, 1)) is Outcome.OK:
                    high = middle
                else:
                    low = middle
            return high
        last_missing, step = probe, min(step * 2, stride)
    return end


def parse_span(text: str, lowest: int, highest: int, what: str) -> tuple[int, int]:
    """'1-247' or '5' -> (first, last), checked against lowest..highest; ValueError says why."""
    first_text, dash, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if dash else first
    except ValueError:
        raise ValueError(f"{what} wants N or N-M, not {text!r}") from None
    if not lowest <= first <= last <= highest:
        raise ValueError(f"{what} {text!r} must lie within {lowest}-{highest}, first <= last")
    return first, last


# --- byte/word order plausibility ---------------------------------------------------------


@dataclass(frozen=True)
class OrderScore:
    """How one byte/word order reads a tag over several reads; a lower `key` is likelier, and
    `decisive` is the part of it that tells orders apart with confidence."""

    byte_order: Order
    word_order: Order
    values: tuple[Any, ...]
    problems: tuple[str, ...]  # why it is implausible (empty: plausible)
    decisive: tuple[float, ...]
    key: tuple[float, ...]

    @property
    def order(self) -> tuple[Order, Order]:
        return self.byte_order, self.word_order


def rank_orders(samples: Sequence[Sequence[int]], data_type: DataType, *, scale: float = 1.0,
                offset: float = 0.0, low: float | None = None,
                high: float | None = None) -> list[OrderScore]:
    """The four orders, likeliest first, for the registers of one tag read several times.

    Plausible: every read decodes, is finite and not a denormal, within `low`..`high` (the
    tag's min/max) when given, and for floats stable (the reads spread by at most 10% of their
    size).
    Among plausible orders: integers that move in the smallest steps (a counter steps by 1; in
    the wrong byte order by 256, the wrong word order by 65,536), then the smallest; floats
    with the fewest digits (a byte swap makes 3.002392 of a PLC's 3.003, a word swap 0.0473 of
    47.25) that move the least between reads, then the nearest to 1 in decades (a wrong order
    of 21.5 reads -2.7e-12). Ties keep big/big first.

    Why the movement counts: digits alone are a coin toss for a PLC's six-digit decimals
    (1612.01 byte-swapped reads -804136.0, as short), but a wrong order moves a read's
    changing low byte up a byte, so its reads spread some 256 times wider."""
    scores = [_score(samples, data_type, b, w, scale, offset, low, high) for b, w in ORDERS]
    return sorted(scores, key=lambda s: s.key)


def decided(scores: Sequence[OrderScore]) -> bool:
    """Whether the best order stands out (not so for a value that reads the same in every
    order, or an integer that does not move)."""
    return len(scores) > 1 and scores[0].decisive < scores[1].decisive


def _score(samples: Sequence[Sequence[int]], data_type: DataType, byte_order: Order,
           word_order: Order, scale: float, offset: float, low: float | None,
           high: float | None) -> OrderScore:
    values: list[Any] = []
    problems: list[str] = []
    for registers in samples:
        try:
            raw = decode_registers(registers, data_type, byte_order, word_order)
        except DecodeError as exc:
            problems.append(str(exc))
            continue
        values.append(apply_scale(raw, scale, offset))
    numbers = [float(v) for v in values]
    problems += _implausible(numbers, data_type, low, high)
    decisive, rest = _likeness(numbers, data_type)
    return OrderScore(byte_order, word_order, tuple(values), tuple(problems),
                      (len(problems), *decisive), (len(problems), *decisive, *rest))


def _implausible(numbers: list[float], data_type: str, low: float | None,
                 high: float | None) -> list[str]:
    if not numbers:
        return ["no read decodes"]
    if not all(math.isfinite(n) for n in numbers):
        return ["not a number"]
    problems = []
    smallest = _SMALLEST_NORMAL.get(data_type)
    if smallest is not None and any(0 < abs(n) < smallest for n in numbers):
        problems.append("a denormal")
    if low is not None and min(numbers) < low:
        problems.append(f"below min {low:g}")
    if high is not None and max(numbers) > high:
        problems.append(f"above max {high:g}")
    size = max(abs(n) for n in numbers)
    # Integers are counters as often as not: how they move is ranked, not ruled out.
    if data_type.startswith("float") and max(numbers) - min(numbers) > 0.1 * size:
        problems.append("unstable across reads")
    return problems


def _likeness(numbers: list[float], data_type: str) -> tuple[tuple[float, ...],
                                                             tuple[float, ...]]:
    """(decisive, tie-breaking) measures of how everyday the values look; lower is likelier."""
    finite = [n for n in numbers if math.isfinite(n)]
    if not finite:
        return (math.inf,), ()
    middle = statistics.median(abs(n) for n in finite)
    if not data_type.startswith("float"):
        steps = [abs(b - a) for a, b in itertools.pairwise(finite)]
        return (statistics.median(steps) if steps else 0.0,), (math.log10(middle + 1),)
    decades = abs(math.log10(middle)) if middle > 0 else 0.0
    digits = statistics.mean(_digits(n) for n in finite)
    return (round(digits + _MOVEMENT_WEIGHT * math.log10(_spread(finite)), 1),), (decades,)


# Digits per tenfold spread. At 0.5, 1592.01 big/big lost to its byte swap (-50258.0, -50340.0:
# fewer digits, 256 times the spread); at 0.6 none of 100,000 random PLC decimals (1-9999 with
# two decimals, every order) ranks wrong.
_MOVEMENT_WEIGHT = 0.6
_SPREAD_FLOOR = 1e-7  # about float32's resolution: reads that do not move tie


def _spread(numbers: list[float]) -> float:
    """How far the reads spread, relative to their size (at least _SPREAD_FLOOR)."""
    size = max(abs(n) for n in numbers)
    spread = (max(numbers) - min(numbers)) / size if size else 0.0
    return max(spread, _SPREAD_FLOOR)


def _digits(number: float) -> int:
    """Significant digits of the shortest repr (of a float32 as it was published)."""
    mantissa = repr(float(number)).lstrip("-").partition("e")[0].replace(".", "")
    return len(mantissa.strip("0")) or 1
