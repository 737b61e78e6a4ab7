"""Durable store-and-forward buffer: SQLite in WAL mode, one cursor per sink.

Readings are appended in batches, one SQLite row per batch (a cycle: cycles.py), numbered by
reading; each sink reads forward from its own cursor (a reading's number, so a sink may ack
part of a row) and advances it only after the far side acknowledged the batch, so a crash, an
outage or a restart loses nothing that reached this file (at-least-once). Rows every sink has
passed are trimmed. Past `max_size` the oldest rows are deleted and every sink that had not
sent their readings counts them as dropped.

The most recent appends are also kept in memory (up to `memory_rows`), so that sinks keeping up
with the drivers read them without a query and without rebuilding `Reading`s from rows (profiled:
that was about half of the gateway's CPU time at high rates). The file stays the truth: a sink
behind the in-memory tail, and every sink after a restart, reads from SQLite.

No SQLite error leaves this class. When the file cannot be written (a full disk, an I/O error)
the buffer is `degraded`: new readings and acks are kept in memory (up to `memory_limit`
readings, the oldest dropped and counted past it), sinks go on reading from memory, and the
writes are retried on later appends and acks until they work again (see docs/buffer.md).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.buffer.cycles import (
    ROW_READINGS,
    DamagedRow,
    decode_cycle,
    device_counts,
    split_rows,
)
from gateway.buffer.database import open_database
from gateway.buffer.highwater import HighWaterFile, Mark, read_mark
from gateway.buffer.legacy import has_legacy_rows
from gateway.buffer.memory import MemoryTail
from gateway.buffer.rows import micros
from gateway.buffer.schema import INSERT_CYCLES, is_damage, set_sequence
from gateway.metrics import COUNTERS, GAUGES, Counters, Gauges
from gateway.models import Reading

log = logging.getLogger(__name__)

_TRIM_EVERY_ACKS = 20
_MEMORY_ROWS = 20_000
_MEMORY_LIMIT = 100_000  # readings kept in memory only while the file cannot be written
_RETRY_FIRST = 0.5  # seconds before the first retry of a failed write; doubles up to:
_RETRY_MAX = 5.0
_FLUSH_ROWS = 5_000  # readings per transaction when memory is written out after a failure
_SELECT_AFTER = "SELECT last_seq, count, data FROM cycles WHERE last_seq > ? ORDER BY last_seq"


@dataclass
class _Cursor:
    last_id: int  # delivered (acknowledged) up to here
    inflight_id: int  # a batch up to here was handed to the sink, maybe not acked
    dropped: int  # readings this sink lost to max_size or memory_limit, ever


class DurableBuffer:
    """The only thing between drivers and sinks. Not thread-safe: use it from the event loop."""

    def __init__(self, path: str | Path, sinks: Iterable[str], max_size: int = 2**30,
                 sync: str = "process", counters: Counters = COUNTERS,
                 memory_rows: int = _MEMORY_ROWS, memory_limit: int = _MEMORY_LIMIT,
                 gauges: Gauges = GAUGES) -> None:
        self.path = Path(path)
        self.max_size = max_size
        self.counters = counters
        self.gauges = gauges
        self.sinks = list(sinks)
        self._memory_rows = memory_rows
        self._memory_limit = memory_limit
        mark = read_mark(self.path)
        self._db = open_database(self.path, sync, mark, self.sinks, counters)
        self._highwater = HighWaterFile(self.path)
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._used_bytes = 0
        self._acks = 0
        self._damaged_seen = 0
        self._reason: str | None = None  # why the file cannot be written, while it cannot
        self._dirty = False  # cursors changed in memory that the file does not have yet
        self._since = self._next_retry = 0.0
        self._retry_delay = _RETRY_FIRST
        self._memory_dropped = self._written_later = 0
        # Per sink, the last row it read part of, decoded (its next read starts there).
        self._partial: dict[str, tuple[int, list[Reading]]] = {}
        top = self._check_mark(mark)
        self._cursors = self._load_cursors(top, mark)
        self._committed = top
        self._tail = MemoryTail(top + 1)
        self._start_at(top)
        self.gauges.set("gateway_buffer_degraded", 0)
        self.unconfirmed_at_start = self._count_unconfirmed()

    # -- opening ---------------------------------------------------------------------------

    def _check_mark(self, mark: Mark | None) -> int:
        """Compare the file with the high-water mark: committed readings it no longer holds
        were lost with its write-ahead log. Returns the highest id ever given out."""
        high = self._highest_id()
        if mark is None:
            return high
        missing = mark.committed - max(high, mark.acked)
        if missing > 0:
            self.counters.inc("gateway_buffer_damaged_total", missing, cause="wal")
            log.error("buffer: %d committed readings (ids %d-%d) are missing from %s: its "
                      "write-ahead log (or the file) was deleted or damaged; they are lost",
                      missing, mark.committed - missing + 1, mark.committed, self.path)
        return max(high, mark.committed)

    def _highest_id(self) -> int:
        row = self._db.execute(
            "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'top'), 0),"
            " COALESCE((SELECT MAX(last_seq) FROM cycles), 0),"
            " COALESCE((SELECT MAX(inflight_id) FROM cursors), 0))").fetchone()
        return int(row[0])

    def _load_cursors(self, top: int, mark: Mark | None) -> dict[str, _Cursor]:
        """The configured sinks' cursors; a new sink starts at the end (it does not replay
        history it never had), a sink no longer configured loses its cursor (else trimming
        would wait for it forever)."""
        acked = mark.acked if mark else 0
        cursors: dict[str, _Cursor] = {}
        for sink, last_id, inflight_id, dropped in self._db.execute(
                "SELECT sink, last_id, inflight_id, dropped FROM cursors"):
            last_id = max(int(last_id), acked)  # an ack whose cursor update the log lost
            cursors[sink] = _Cursor(last_id, max(int(inflight_id), last_id), int(dropped))
        for sink in [s for s in cursors if s not in self.sinks]:
            log.warning("buffer: dropped the cursor of sink %s, which is no longer configured "
                        "(%d readings it had not sent); trimming no longer waits for it",
                        sink, max(0, top - cursors[sink].last_id))
            del cursors[sink]
        for sink in self.sinks:
            cursors.setdefault(sink, _Cursor(top, top, 0))
        return cursors

    def _start_at(self, top: int) -> None:
        """Write the cursors as loaded and make the file's ids go on after `top`."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(f"DELETE FROM cursors WHERE sink NOT IN "
                                 f"({', '.join('?' * len(self.sinks))})", self.sinks)
                self._write_cursors()
                set_sequence(self._db, top)
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        self._mark_committed()

    def _count_unconfirmed(self) -> dict[str, int]:
        """Per sink, readings sent before a crash whose ack never came: they will be sent again."""
        counts = {sink: c.inflight_id - c.last_id for sink, c in self._cursors.items()
                  if c.inflight_id > c.last_id}
        for sink, count in counts.items():
            self.counters.inc("gateway_sink_possible_duplicates_total", count, sink=sink)
            log.info("%s: %d readings were in flight at the last stop and are sent again "
                     "(at-least-once)", sink, count)
        return counts

    # -- the hot path ----------------------------------------------------------------------

    def append(self, readings: Sequence[Reading]) -> None:
        """Store a batch in one transaction (in memory while the file cannot be written)."""
        if not readings:
            return
        if self._reason is None:
            first_id = self._tail.end
            try:
                self._insert(first_id, readings)
            except sqlite3.Error as exc:
                self._fail(exc)
            else:
                self._tail.add(readings, saved=True)
                self._tail.limit_saved(self._memory_rows)
                self._committed = self._tail.end - 1
                self._mark_committed()
                self.counters.inc("gateway_buffer_appended_total", len(readings))
                self._keep_under_max_size()
                return
        self._tail.add(readings, saved=False)
        self._bound_memory()
        self._retry_if_due()

    def _insert(self, first_id: int, readings: Sequence[Reading]) -> None:
        """Write readings numbered from `first_id` in one transaction, as cycle rows."""
        rows = split_rows(first_id, readings)
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(INSERT_CYCLES, rows)

    def read(self, sink: str, limit: int) -> tuple[int, list[Reading]]:
        """Up to `limit` readings after the sink's cursor, oldest first, and the last row id.
        Damaged rows are skipped (and counted); empty only when nothing is waiting."""
        while True:
            cursor = self.cursor(sink)
            batch = self._tail.get(cursor, limit)
            if batch is not None:
                return cursor + len(batch), batch
            if cursor >= self._tail.saved_up_to:
                return self._read_memory(cursor, limit)
            last_id, readings = self._read_file(sink, cursor, limit)
            if last_id is None:  # the file cannot be read now: again at the next call
                return cursor, []
            if readings:
                return last_id, readings
            if last_id <= cursor:  # the file has nothing after the cursor
                return self._read_memory(cursor, limit)
            self._skip(sink, last_id)  # only damaged rows there: past them, and read on

    def _read_memory(self, cursor: int, limit: int) -> tuple[int, list[Reading]]:
        """What memory holds after `cursor`: ids between them are nowhere (dropped, counted)."""
        after = max(cursor, self._tail.first - 1)
        batch = self._tail.get(after, limit) or []
        return (after + len(batch), batch) if batch else (cursor, [])

    def _read_file(self, sink: str, cursor: int,
                   limit: int) -> tuple[int | None, list[Reading]]:
        """Readings after `cursor` from the file: the last number looked at (None: the file
        could not be read) and the readings. Rows are read until `limit` readings are had; of
        the last one only what fits is taken (and the row is kept decoded for the next read)."""
        try:
            query = self._db.execute(_SELECT_AFTER, (cursor,))
            try:
                return self._take(sink, cursor, limit, query)
            finally:
                query.close()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                return None, []  # busy, I/O
            return self._read_around_damage(sink, cursor, limit)
        except sqlite3.Error:
            return None, []

    def _take(self, sink: str, cursor: int, limit: int,
              rows: Iterable[tuple[Any, ...]]) -> tuple[int, list[Reading]]:
        readings: list[Reading] = []
        last_id = cursor
        for last_seq, count, data in rows:
            last_id = self._take_row(sink, last_id, limit, readings, last_seq, count, data)
            if len(readings) >= limit:
                break
        return last_id, readings

    def _take_row(self, sink: str, after: int, limit: int, readings: list[Reading],
                  last_seq: int, count: int, data: bytes) -> int:
        """Add the readings of one row numbered above `after`, up to `limit` in all; returns
        the number of the last one taken (or looked at)."""
        partial = self._partial.get(sink)
        if partial is not None and partial[0] == last_seq:
            decoded = partial[1]
        else:
            try:
                decoded = decode_cycle(data, count)
            except DamagedRow:
                self._count_damaged(last_seq, count)
                return last_seq
        first = last_seq - count + 1
        skip = max(0, after + 1 - first)
        room = limit - len(readings)
        taken = decoded[skip:skip + room]
        readings += taken
        if skip + len(taken) < count:
            self._partial[sink] = (last_seq, decoded)
            return first + skip + len(taken) - 1
        self._partial.pop(sink, None)
        return last_seq

    def _read_around_damage(self, sink: str, cursor: int,
                            limit: int) -> tuple[int | None, list[Reading]]:
        """A damaged page under the range: the rows one by one (by the number they end at),
        the unreadable ones skipped."""
        readings: list[Reading] = []
        last_id = cursor
        # The row holding reading cursor + limit ends at most ROW_READINGS after it.
        end = min(cursor + limit + ROW_READINGS, self._tail.saved_up_to)
        for seq in range(cursor + 1, end + 1):
            try:
                row = self._db.execute("SELECT last_seq, count, data FROM cycles "
                                       "WHERE last_seq = ?", (seq,)).fetchone()
            except sqlite3.DatabaseError:
                self._count_damaged(seq, 1)
                last_id = seq
                continue
            if row is not None:
                last_id = self._take_row(sink, last_id, limit, readings, *row)
            if len(readings) >= limit:
                break
        return last_id, readings

    def _count_damaged(self, last_seq: int, count: int) -> None:
        if last_seq <= self._damaged_seen:
            return  # another sink met it first
        self._damaged_seen = last_seq
        self.counters.inc("gateway_buffer_damaged_total", count, cause="row")
        log.error("buffer: the row of readings %d-%d of %s is damaged and skipped (%d readings "
                  "lost)", last_seq - count + 1, last_seq, self.path, count)

    def _skip(self, sink: str, last_id: int) -> None:
        state = self._cursors.setdefault(sink, _Cursor(0, 0, 0))
        state.last_id = max(state.last_id, last_id)
        state.inflight_id = max(state.inflight_id, last_id)
        self._write_cursor(sink)

    def mark_inflight(self, sink: str, last_id: int) -> None:
        """The sink is about to send up to `last_id`: if the process dies before the ack, the
        next start knows those readings may be delivered twice (and counts them)."""
        state = self._cursors.get(sink)
        if state is None or last_id <= state.inflight_id:
            return
        state.inflight_id = last_id
        self._write_cursor(sink)

    def ack(self, sink: str, last_id: int) -> None:
        """The sink delivered everything up to `last_id`."""
        state = self._cursors.get(sink)
        if state is None:
            return
        state.last_id = max(state.last_id, last_id)
        state.inflight_id = max(state.inflight_id, last_id)
        self._write_cursor(sink)
        self._acks += 1
        if self._reason is not None:
            self._tail.forget(self._lowest_cursor())
            self._retry_if_due()
        elif self._acks % _TRIM_EVERY_ACKS == 0:
            self._trim()
        elif self._tail:  # the in-memory tail goes as soon as every sink passed it
            self._tail.forget(self._lowest_cursor())

    def _write_cursor(self, sink: str) -> None:
        if self._reason is not None:
            self._dirty = True
            return
        state = self._cursors[sink]
        try:
            self._db.execute("UPDATE cursors SET last_id = ?, inflight_id = ?, dropped = ? "
                             "WHERE sink = ?",
                             (state.last_id, state.inflight_id, state.dropped, sink))
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        self._mark_committed()

    def _write_cursors(self) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO cursors (sink, last_id, inflight_id, dropped) "
            "VALUES (?, ?, ?, ?)",
            [(sink, c.last_id, c.inflight_id, c.dropped) for sink, c in self._cursors.items()])

    def _lowest_cursor(self) -> int:
        return min((c.last_id for c in self._cursors.values()), default=self._tail.end - 1)

    def _mark_committed(self) -> None:
        self._highwater.write(self._committed, min(self._lowest_cursor(), self._committed))

    # -- what the status server and `gateway status` show -----------------------------------

    def cursor(self, sink: str) -> int:
        state = self._cursors.get(sink)
        return state.last_id if state else 0

    def depth(self, sink: str) -> int:
        """Readings waiting for this sink."""
        cursor = self.cursor(sink)
        try:
            in_file = int(self._db.execute(
                "SELECT COALESCE(SUM(MIN(count, last_seq - ?)), 0) FROM cycles WHERE "
                "last_seq > ?", (cursor, cursor)).fetchone()[0])
        except sqlite3.Error:
            in_file = max(0, self._tail.saved_up_to - cursor)
        return in_file + self._tail.unsaved_after(cursor)

    def oldest_unsent_age(self, sink: str, now: datetime | None = None) -> float:
        """Seconds since the source timestamp of the oldest reading this sink has not sent."""
        cursor = self.cursor(sink)
        row = None
        with suppress(sqlite3.Error):
            row = self._db.execute("SELECT ts_us FROM cycles WHERE last_seq > ? ORDER BY "
                                   "last_seq LIMIT 1", (cursor,)).fetchone()
        if row is not None and type(row[0]) is int:
            ts_us = row[0]
        else:
            reading = self._tail.first_after(cursor)
            if reading is None:
                return 0.0
            ts_us = micros(reading.source_ts)
        return max(0.0, (micros(now or datetime.now(UTC)) - ts_us) / 1e6)

    def dropped(self, sink: str) -> int:
        """Readings this sink lost to `max_size` (or to `memory_limit` while the file could not
        be written) over the buffer's whole life."""
        state = self._cursors.get(sink)
        return state.dropped if state else 0

    @property
    def degraded(self) -> str | None:
        """Why the buffer keeps new readings in memory only (for /healthz); None when it does
        not."""
        if self._reason is None:
            return None
        return (f"cannot write {self.path.name} ({self._reason}): {self._tail.unsaved} "
                "readings are held in memory only")

    def used_bytes(self) -> int:
        with suppress(sqlite3.Error):
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            self._used_bytes = int(pages - free) * self._page_size
        return self._used_bytes

    def close(self) -> None:
        if self._reason is not None or self._dirty or self._tail.unsaved:
            self._write_memory()
        unsaved = self._tail.unsaved
        if unsaved:
            self.counters.inc("gateway_buffer_lost_total", unsaved)
            log.error("buffer: %d readings held in memory could not be written to %s (%s) and "
                      "are lost", unsaved, self.path, self._reason)
        with suppress(sqlite3.Error):
            self._trim_file()
        self._highwater.close()
        with suppress(sqlite3.Error):
            self._db.close()

    # -- trimming and max_size -------------------------------------------------------------

    def _trim(self) -> None:
        try:
            self._trim_file()
        except sqlite3.Error as exc:
            self._fail(exc)

    def _trim_file(self) -> None:
        """Delete the rows every sink has delivered whole."""
        lowest = self._lowest_cursor()
        self._db.execute("DELETE FROM cycles WHERE last_seq <= ?", (lowest,))
        self._tail.forget(lowest)

    def _keep_under_max_size(self) -> None:
        while self.used_bytes() > self.max_size and self._drop_oldest():
            pass

    def _drop_oldest(self) -> bool:
        """Free a tenth of the readings (whole rows), oldest first, counting what each sink
        never sent. False when there is nothing left to drop (or the file cannot be written)."""
        try:
            self._trim_file()
            count, first = self._db.execute(
                "SELECT SUM(count), MIN(last_seq - count + 1) FROM cycles").fetchone()
            if not count:
                return False
            cut = int(self._db.execute(
                "SELECT MIN(last_seq) FROM cycles WHERE last_seq >= ?",
                (first + max(1, count // 10) - 1,)).fetchone()[0])
            lost = {sink: int(self._db.execute(
                "SELECT COALESCE(SUM(MIN(count, last_seq - ?)), 0) FROM cycles WHERE "
                "last_seq > ? AND last_seq <= ?",
                (c.last_id, c.last_id, cut)).fetchone()[0]) for sink, c in self._cursors.items()}
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM cycles WHERE last_seq <= ?", (cut,))
                self._db.executemany(
                    "UPDATE cursors SET last_id = MAX(last_id, ?), inflight_id = "
                    "MAX(inflight_id, ?), dropped = dropped + ? WHERE sink = ?",
                    [(cut, cut, n, sink) for sink, n in lost.items()])
        except sqlite3.Error as exc:
            self._fail(exc)
            return False
        for sink, n in lost.items():
            self._count_dropped(sink, n, cut)
            if n:
                log.warning("buffer full (%d bytes): dropped %d oldest readings unsent to %s",
                            self.max_size, n, sink)
        self._tail.forget(cut)
        self._mark_committed()
        return True

    def _count_dropped(self, sink: str, count: int, up_to_id: int) -> None:
        state = self._cursors[sink]
        state.last_id = max(state.last_id, up_to_id)
        state.inflight_id = max(state.inflight_id, up_to_id)
        state.dropped += count
        if count:
            self.counters.inc("gateway_buffer_dropped_total", count, sink=sink)

    # -- when the file cannot be written -----------------------------------------------------

    def _fail(self, exc: sqlite3.Error) -> None:
        """A write failed: go on in memory (said once), retry later."""
        with suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.rollback()
        self._dirty = True
        reason = str(exc) or type(exc).__name__
        if self._reason is None:
            self._since = time.monotonic()
            self._retry_delay = _RETRY_FIRST
            self._next_retry = self._since + _RETRY_FIRST
            self._memory_dropped = self._written_later = 0
            self.counters.inc("gateway_buffer_degraded_total")
            self.gauges.set("gateway_buffer_degraded", 1)
            log.warning("buffer: cannot write %s (%s): polling and delivery go on from memory "
                        "(up to %d readings) and the writes are retried",
                        self.path, reason, self._memory_limit)
        self._reason = reason

    def _bound_memory(self) -> None:
        dropped = self._tail.drop_unsaved(self._memory_limit)
        self.gauges.set("gateway_buffer_memory_only_readings", self._tail.unsaved)
        if dropped is None:
            return
        first, last = dropped
        if not self._memory_dropped:
            log.warning("buffer: %d readings in memory: dropping the oldest of them until %s "
                        "can be written (counted in gateway_buffer_dropped_total)",
                        self._memory_limit, self.path)
        self._memory_dropped += last - first + 1
        for sink, state in self._cursors.items():
            if state.last_id < last:
                count = last - max(state.last_id, first - 1)
                state.dropped += count
                self.counters.inc("gateway_buffer_dropped_total", count, sink=sink)
        self._dirty = True

    def _retry_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_retry:
            return
        if self._write_memory():
            self._recovered()
            return
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        self._next_retry = now + self._retry_delay

    def _write_memory(self) -> bool:
        """Write what only memory holds: the readings (oldest first, in chunks, so that a
        little space saves a little), then the cursors. True when all of it is written."""
        with suppress(sqlite3.Error):  # the log's space comes back if a checkpoint can run
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._tail.forget(self._lowest_cursor())  # delivered everywhere: needed nowhere
        try:
            for first_id, chunk in self._tail.unsaved_chunks(_FLUSH_ROWS):
                self._insert(first_id, chunk)
                self._tail.mark_saved(first_id + len(chunk) - 1)
                self._written_later += len(chunk)
                self.counters.inc("gateway_buffer_appended_total", len(chunk))
            with self._db:
                self._db.execute("BEGIN")
                self._write_cursors()
                set_sequence(self._db, self._tail.end - 1)
        except sqlite3.Error as exc:
            self._fail(exc)
            return False
        self._dirty = False
        self._tail.mark_saved(self._tail.end - 1)
        self._committed = self._tail.end - 1
        self._mark_committed()
        return True

    def _recovered(self) -> None:
        log.warning("buffer: writing %s works again after %.1fs: %d readings held in memory "
                    "were written, %d dropped", self.path, time.monotonic() - self._since,
                    self._written_later, self._memory_dropped)
        self._reason = None
        self.gauges.set("gateway_buffer_degraded", 0)
        self.gauges.set("gateway_buffer_memory_only_readings", 0)
        self._trim()
        self._keep_under_max_size()


_BACKLOG = ("SELECT COALESCE(SUM(MIN(count, last_seq - ?)), 0), MIN(ts_us) FROM cycles "
            "WHERE last_seq > ?")
# A file of the first schema that no gateway has opened since the upgrade (legacy.py).
_BACKLOG_LEGACY = "SELECT COUNT(*) + 0 * ?, MIN(ts_us) FROM readings WHERE id > ?"


def buffer_devices(path: str | Path) -> list[tuple[str, int, int, int | None]]:
    """Per device in the buffer, by name: readings, readings not good, the newest source
    timestamp (microseconds). Read-only, like buffer_report; damaged rows are left out."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        if has_legacy_rows(db):
            return [(str(name), int(n), int(bad or 0), ts) for name, n, bad, ts in db.execute(
                "SELECT device, COUNT(*), SUM(quality != 'good'), MAX(ts_us) FROM readings "
                "GROUP BY device ORDER BY device")]
        lowest = db.execute("SELECT MIN(last_id) FROM cursors").fetchone()[0] or 0
        totals: dict[str, tuple[int, int, int]] = {}
        for last_seq, count, data in db.execute(
                "SELECT last_seq, count, data FROM cycles ORDER BY last_seq"):
            with suppress(DamagedRow):
                skip = max(0, lowest - (last_seq - count))  # delivered everywhere: trimmed
                for device, (n, bad, newest) in device_counts(data, count, skip).items():
                    had, had_bad, had_newest = totals.get(device, (0, 0, newest))
                    totals[device] = (had + n, had_bad + bad, max(had_newest, newest))
        return [(name, *totals[name]) for name in sorted(totals)]
    finally:
        db.close()


def buffer_report(path: str | Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per sink: backlog, age of the oldest unsent reading, drops, unconfirmed sends. Opens the
    file read-only, so it works beside a running gateway (`gateway status`)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        now_us = micros(now or datetime.now(UTC))
        report = []
        backlog = _BACKLOG_LEGACY if has_legacy_rows(db) else _BACKLOG
        for sink, last_id, inflight_id, dropped in db.execute(
                "SELECT sink, last_id, inflight_id, dropped FROM cursors ORDER BY sink"):
            depth, oldest = db.execute(backlog, (last_id, last_id)).fetchone()
            report.append({
                "sink": sink, "depth": depth, "dropped": dropped,
                "unconfirmed": max(0, inflight_id - last_id),
                "oldest_unsent_age_s": round((now_us - oldest) / 1e6, 3) if oldest else 0.0,
            })
        return report
    finally:
        db.close()
