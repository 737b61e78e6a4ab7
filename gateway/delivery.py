"""Delivery: one loop per sink, from its buffer cursor to the far side. The loop owns batching,
pacing, retries and the cursor; the sink declares its `Delivery` settings and sends one batch
at a time (the runtime never calls `send()` again before the last one returned)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gateway.backoff import Backoff
from gateway.buffer import DurableBuffer
from gateway.errors import SinkError
from gateway.metrics import COUNTERS
from gateway.sinks import Sink

log = logging.getLogger(__name__)

# Longer than paho's 5 s connect timeout: a connect under way succeeds or fails within it.
FIRST_CONNECTION_GRACE = 10.0


class SinkDelivery:
    """Sends the sink's backlog oldest first; advances its cursor only after an ack."""

    def __init__(self, sink: Sink, buffer: DurableBuffer, appended: Callable[[], int],
                 polling_done: asyncio.Event) -> None:
        self.sink = sink
        self.buffer = buffer
        self.new_data = asyncio.Event()
        self._appended = appended
        self._polling_done = polling_done
        self._backoff = Backoff(initial=0.5, cap=30.0)
        self._pace = Pace(sink.delivery.max_rate)

    async def run(self) -> None:
        """Until polling is done and the backlog is sent (or the sink fails while stopping)."""
        await self.sink.wait_first_connection(FIRST_CONNECTION_GRACE)
        while await self._send_next():
            pass

    async def _send_next(self) -> bool:
        settings = self.sink.delivery
        await self._pace.wait()
        last_id, batch = self.buffer.read(self.sink.name, settings.batch_size)
        if not batch:
            if self._polling_done.is_set():
                return False
            self.new_data.clear()
            await self.new_data.wait()
            return True
        if (len(batch) < settings.batch_size and settings.flush_interval > 0
                and not self._polling_done.is_set()):
            await self._wait_for_more(settings.flush_interval, settings.batch_size - len(batch))
            last_id, batch = self.buffer.read(self.sink.name, settings.batch_size)
        self.buffer.mark_inflight(self.sink.name, last_id)
        try:
            await self.sink.send(batch)
        except SinkError as exc:
            return await self._retry_later(exc)
        self._backoff.reset()
        self.buffer.ack(self.sink.name, last_id)
        self._pace.sent(len(batch))
        return True

    async def _retry_later(self, exc: SinkError) -> bool:
        delay = self._backoff.next()
        COUNTERS.inc("gateway_sink_retries_total", sink=self.sink.name)
        log.warning("%s: %s; retrying in %.1fs", self.sink.name, exc, delay)
        if self._polling_done.is_set():
            return False  # shutting down: the backlog stays in the buffer for the next start
        await self.sink.wait_ready(delay)
        return True

    async def _wait_for_more(self, seconds: float, wanted: int) -> None:
        """Wait until `wanted` more readings arrived or `seconds` passed (batching by size and
        by interval)."""
        deadline = time.monotonic() + seconds
        target = self._appended() + wanted
        while ((remaining := deadline - time.monotonic()) > 0 and self._appended() < target
               and not self._polling_done.is_set()):
            self.new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new_data.wait(), remaining)


class Pace:
    """Spaces batches so that a sink sends at most `rate` readings per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._not_before = 0.0

    def sent(self, count: int) -> None:
        if self.rate:
            self._not_before = max(self._not_before, time.monotonic()) + count / self.rate

    async def wait(self) -> None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
