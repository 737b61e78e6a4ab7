"""Deterministic CNC machine model: the same seed gives the same sequence of values.

One `step()` is one model tick. The machine runs a program for a while, then either pauses
(IDLE, loading the next program) or stops on an alarm (ALARM, cleared after a few ticks).
While RUNNING it finishes one part per tick, so counters move visibly even at a fast tick.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

RUNNING, IDLE, ALARM = "RUNNING", "IDLE", "ALARM"
STATES = (RUNNING, IDLE, ALARM)

# program -> (nominal spindle speed in rpm, nominal feed rate in mm/min)
PROGRAMS: dict[str, tuple[float, float]] = {
    "O1000": (12000.0, 1500.0),
    "O2010": (8000.0, 900.0),
    "O3150": (15000.0, 2200.0),
}
ALARMS = ("EX1001 SPINDLE OVERLOAD", "EX2003 COOLANT LEVEL LOW", "EX3010 TOOL LIFE EXPIRED")
# Travel of the machine's axes in mm (also the simulator's EURange of the positions).
TRAVEL = {"x": (0.0, 500.0), "y": (0.0, 300.0), "z": (-200.0, 0.0)}
MAX_SPINDLE_SPEED = 18000.0
MAX_FEED_RATE = 5000.0


@dataclass
class Cnc:
    seed: int = 0
    rng: random.Random = field(init=False)
    state: str = RUNNING
    program: str = "O1000"
    alarm: str = ""
    spindle_speed: float = 0.0
    spindle_load: float = 0.0
    feed_rate: float = 0.0
    parts: int = 0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    ticks_left: int = field(init=False)
    phase: float = 0.0
    spindle_setpoint: float = 0.0  # rpm written by a client; 0: the program's speed
    spindle_override: int = 100  # percent of the speed, written by a client

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ticks_left = self.rng.randint(30, 80)

    def step(self) -> None:
        self.ticks_left -= 1
        if self.ticks_left <= 0:
            self._next_state()
        if self.state == RUNNING:
            self._cut()
        else:
            self._stand_still()

    def _next_state(self) -> None:
        """RUNNING ends in IDLE (next program) or, less often, ALARM; both go back to RUNNING."""
        if self.state == RUNNING:
            if self.rng.random() < 0.3:
                self.state, self.alarm = ALARM, self.rng.choice(ALARMS)
                self.ticks_left = self.rng.randint(10, 20)
            else:
                self.state = IDLE
                self.ticks_left = self.rng.randint(5, 10)
            return
        if self.state == IDLE:
            names = sorted(PROGRAMS)
            self.program = names[(names.index(self.program) + 1) % len(names)]
        self.state, self.alarm = RUNNING, ""
        self.ticks_left = self.rng.randint(30, 80)

    def _cut(self) -> None:
        speed, feed = PROGRAMS[self.program]
        speed = self.spindle_setpoint or speed
        noise = self.rng.uniform(-50, 50)
        self.spindle_speed = (speed + noise if self.spindle_override == 100
                              else speed * self.spindle_override / 100 + noise)
        self.spindle_load = round(40 + self.rng.uniform(-5, 5), 2)
        self.feed_rate = round(feed + self.rng.uniform(-20, 20), 1)
        self.parts += 1
        # The tool follows an ellipse in XY and pecks in Z: positions stay within the travel.
        self.phase = (self.phase + 0.1) % (2 * math.pi)
        self.x = round(250 + 200 * math.cos(self.phase) + self.rng.uniform(-1, 1), 3)
        self.y = round(150 + 100 * math.sin(self.phase) + self.rng.uniform(-1, 1), 3)
        self.z = round(-20 - 10 * abs(math.sin(3 * self.phase)), 3)

    def _stand_still(self) -> None:
        self.spindle_speed = 0.0
        self.spindle_load = 0.0
        self.feed_rate = 0.0
