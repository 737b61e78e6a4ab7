"""The in-memory tail of the buffer: the newest readings, by row id, in memory.

Most of it is a cache of rows that are in the file too (sinks that keep up read it without a
query). While the file cannot be written (a full disk), it is also the only copy of the readings
appended since: those above `saved_up_to`. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from itertools import islice

from gateway.models import Reading


class MemoryTail:
    """Readings with consecutive row ids `first` ... `end - 1`. Ids above `saved_up_to` are in
    memory only. Ids between `saved_up_to` and `first` are nowhere: every sink had delivered
    them, or they were dropped (counted) to keep memory bounded."""

    def __init__(self, next_id: int = 1) -> None:
        self._items: deque[Reading] = deque()
        self.first = next_id
        self.saved_up_to = next_id - 1

    @property
    def end(self) -> int:
        """The id the next appended reading gets."""
        return self.first + len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def unsaved(self) -> int:
        """Readings only memory holds."""
        return self.end - 1 - max(self.saved_up_to, self.first - 1)

    def add(self, readings: Sequence[Reading], saved: bool) -> int:
        """Append readings with the next ids; returns the first id."""
        first_id = self.end
        self._items.extend(readings)
        if saved:
            self.saved_up_to = self.end - 1
        return first_id

    def restart_at(self, first_id: int) -> None:
        """Forget everything (all saved) and go on from `first_id` (the file said so)."""
        if self.unsaved:
            raise ValueError("unsaved readings would be lost")
        self._items.clear()
        self.first = first_id
        self.saved_up_to = first_id - 1

    def get(self, after_id: int, limit: int) -> list[Reading] | None:
        """Up to `limit` readings after `after_id`; None when memory does not hold the next one
        (the file may)."""
        start = after_id + 1 - self.first
        if not 0 <= start < len(self._items):
            return None
        return list(islice(self._items, start, start + limit))

    def first_after(self, after_id: int) -> Reading | None:
        batch = self.get(max(after_id, self.first - 1), 1)
        return batch[0] if batch else None

    def unsaved_after(self, after_id: int) -> int:
        """How many memory-only readings have ids above `after_id`."""
        return max(0, self.end - 1 - max(after_id, self.saved_up_to, self.first - 1))

    def forget(self, up_to_id: int) -> None:
        """Every sink delivered up to `up_to_id`: those readings are needed nowhere."""
        while self._items and self.first <= up_to_id:
            self._items.popleft()
            self.first += 1
        self.saved_up_to = max(self.saved_up_to, min(up_to_id, self.end - 1))

    def limit_saved(self, rows: int) -> None:
        """Keep at most `rows` readings in memory while the oldest of them are in the file."""
        excess = len(self._items) - rows
        if excess > 0:
            self.forget(min(self.first + excess - 1, self.saved_up_to))

    def drop_unsaved(self, limit: int) -> tuple[int, int] | None:
        """Keep at most `limit` memory-only readings: forget the cached ones, then drop the
        oldest memory-only ones. Returns the range of dropped ids (first, last), if any."""
        if self.unsaved <= limit:
            return None
        self.forget(self.saved_up_to)
        first_dropped = self.first
        while len(self._items) > limit:
            self._items.popleft()
            self.first += 1
        return first_dropped, self.first - 1

    def unsaved_chunks(self, size: int) -> Iterator[tuple[int, list[Reading]]]:
        """The memory-only readings, oldest first, as (first id, readings) of up to `size`."""
        start = max(self.saved_up_to + 1, self.first)
        while start < self.end:
            chunk = list(islice(self._items, start - self.first, start - self.first + size))
            yield start, chunk
            start += len(chunk)

    def mark_saved(self, up_to_id: int) -> None:
        self.saved_up_to = max(self.saved_up_to, min(up_to_id, self.end - 1))
