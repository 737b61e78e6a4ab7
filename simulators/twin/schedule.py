"""How a drill spreads its faults over `--minutes` (pure).

A short drill (CI: half a minute) runs each fault once, held for half its share of the time.
A long one (the one-hour soak) runs the whole list again in rounds, so that a fault starts at
least every `MAX_SLOT_S` seconds: an hour of the demo plant is about fifteen faults, not eight
faults held for four minutes each. Each fault owns a slot: it is injected at the slot's start,
held, cleared, waited out until every sink has caught up, and the rest of the slot is quiet
polling (counted too)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_SLOT_S = 240.0
SETTLE_S = 20.0  # the baseline and the final drain, outside the fault slots


@dataclass(frozen=True)
class Schedule:
    rounds: int
    slot_s: float  # from one fault's injection to the next's
    hold_s: float  # how long a fault that lasts (broker down, disk full) is held


def fault_schedule(minutes: float, faults: int) -> Schedule:
    """The rounds, slot and hold for `faults` faults in a drill of `minutes`."""
    usable = max(0.0, minutes * 60 - SETTLE_S)
    count = max(1, faults)
    rounds = max(1, math.ceil(usable / (count * MAX_SLOT_S)))
    slot = usable / (count * rounds)
    return Schedule(rounds, slot, max(1.0, 0.5 * slot))
