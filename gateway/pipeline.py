"""The way up from the drivers to the buffer: deadband (report by exception), the latest-value
table the views read, then the durable buffer, one append per event loop pass. Later stages
(edge KPIs) join here; drivers and sinks never see this module."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from gateway.buffer import DurableBuffer
from gateway.deadband import DeadbandFilter
from gateway.metrics import COUNTERS
from gateway.models import Reading
from gateway.state import TagState

log = logging.getLogger(__name__)


class Pipeline:
    """Takes readings from every device and stores them; `appended` counts what was stored,
    and `on_stored` is called after each store (it wakes the sinks)."""

    def __init__(self, buffer: DurableBuffer, tags: TagState,
                 deadbands: Mapping[tuple[str, str], float],
                 on_stored: Callable[[], None] = lambda: None,
                 observers: Sequence[Callable[[Sequence[Reading]], None]] = ()) -> None:
        self.buffer = buffer
        self.tags = tags
        self.observers = list(observers)  # see every reading before the deadband (KPIs)
        self.appended = 0
        self._filter = DeadbandFilter(deadbands)
        self._on_stored = on_stored
        self._unstored: list[Reading] = []  # published this loop pass, stored at its end

    def set_deadbands(self, deadbands: Mapping[tuple[str, str], float]) -> None:
        self._filter.set_deadbands(deadbands)

    def publish(self, readings: Sequence[Reading]) -> None:
        for observe in self.observers:
            observe(readings)
        readings = self._filter.apply(readings)
        if not readings:
            return
        self.tags.update(readings)
        if not self._unstored:
            asyncio.get_running_loop().call_soon(self.store)
        self._unstored += readings

    def store(self) -> None:
        """Append what the polls of one event loop pass produced, in one transaction: one
        commit per pass rather than one per poll. Until then (the rest of that pass) the
        readings are not buffered, as they were not while the poll's answer was decoded."""
        readings, self._unstored = self._unstored, []
        if not readings:
            return
        try:
            self.buffer.append(readings)
        except Exception:  # the buffer keeps what it can; this is the last line of defence
            COUNTERS.inc("gateway_buffer_lost_total", len(readings))
            log.exception("buffer: %d readings could not be stored and are lost", len(readings))
            return
        self.appended += len(readings)
        self._on_stored()
