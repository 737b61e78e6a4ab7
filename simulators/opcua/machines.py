"""Deterministic CNC machine model."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Cnc:
    seed: int = 0
    rng: random.Random = field(init=False)
    spindle_speed: float = 0.0
    spindle_load: float = 0.0
    parts: int = 0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def step(self) -> None:
        self.spindle_speed = 12000 + self.rng.uniform(-50, 50)
        self.spindle_load = 40 + self.rng.uniform(-5, 5)
        self.parts += 1
        self.x, self.y, self.z = (round(self.rng.uniform(0, 500), 3) for _ in range(3))
