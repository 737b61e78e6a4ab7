"""Process-wide counters (exported on /metrics by the status server)."""

from __future__ import annotations

import threading
from collections import Counter as _Counter


class Counters:
    """Named counters with label tuples; thread-safe, because paho calls back from its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: _Counter[tuple[str, tuple[tuple[str, str], ...]]] = _Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] += amount

    def get(self, name: str, **labels: str) -> int:
        """The counter's value; with no labels given, the sum over all label sets."""
        with self._lock:
            if labels:
                return self._values[(name, tuple(sorted(labels.items())))]
            return sum(v for (n, _), v in self._values.items() if n == name)

    def snapshot(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], int]:
        with self._lock:
            return dict(self._values)


COUNTERS = Counters()
