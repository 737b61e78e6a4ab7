"""The bounded buffer of subscription notifications between two reads (no I/O)."""

from __future__ import annotations

import logging
from collections import deque

from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading

log = logging.getLogger(__name__)

DROPPED = "gateway_opcua_buffer_dropped_total"


class NotificationBuffer:
    """Keeps at most `max_size` readings; past it the oldest go, counted per device in
    `gateway_opcua_buffer_dropped_total`, with one warning per overflow episode (an episode
    ends at the first drain that finds nothing dropped since the previous one)."""

    def __init__(self, device: str, max_size: int, counters: Counters = COUNTERS) -> None:
        self.device = device
        self.max_size = max_size
        self.counters = counters
        self._items: deque[Reading] = deque()
        self._dropped_since_drain = 0
        self._warned = False

    def __len__(self) -> int:
        return len(self._items)

    def append(self, reading: Reading) -> None:
        if len(self._items) >= self.max_size:
            self._items.popleft()
            self._drop()
        self._items.append(reading)

    def drain(self) -> list[Reading]:
        if not self._dropped_since_drain:
            self._warned = False
        self._dropped_since_drain = 0
        drained = list(self._items)
        self._items.clear()
        return drained

    def _drop(self) -> None:
        self._dropped_since_drain += 1
        self.counters.inc(DROPPED, device=self.device)
        if not self._warned:
            self._warned = True
            log.warning("%s: more than %d OPC UA notifications arrived between two reads; the "
                        "oldest are dropped (counted in %s)", self.device, self.max_size,
                        DROPPED)
