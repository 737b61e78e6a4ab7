"""Exponential backoff with full jitter, capped (reconnects to devices and sinks)."""

from __future__ import annotations

import random

_JITTER = random.Random()
"""One generator for every backoff: a `random.Random` holds 2.5 KB of state (1.25 MB for the
500 devices of Neuron's scenario), and the draws need no stream of their own."""


class Backoff:
    """Delays of initial * 2**n, capped at `cap`, each drawn uniformly from [d/2, d] so that
    many gateways restarting together do not hammer a PLC or broker in lockstep."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng or _JITTER
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * 2 ** min(self._attempt, 30))
        self._attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
