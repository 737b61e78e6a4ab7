"""Durable store-and-forward buffer: SQLite in WAL mode, one cursor per sink.

Readings are appended in batches; each sink reads forward from its own cursor and advances it
only after the far side acknowledged the batch, so a crash, an outage or a restart loses nothing
that reached this file (at-least-once). Rows every sink has passed are trimmed. Past `max_size`
the oldest rows are deleted and every sink that had not sent them counts them as dropped.

The most recent appends are also kept in memory (up to `memory_rows`), so that sinks keeping up
with the drivers read them without a query and without rebuilding `Reading`s from rows (profiled:
that was about half of the gateway's CPU time at high rates). The file stays the truth: a sink
behind the in-memory tail, and every sink after a restart, reads from SQLite.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

from gateway.metrics import COUNTERS, Counters
from gateway.models import Quality, Reading

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, tag TEXT NOT NULL, value TEXT NOT NULL, quality TEXT NOT NULL,
    ts_us INTEGER NOT NULL, unit TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,      -- delivered (acknowledged) up to here
    inflight_id INTEGER NOT NULL,  -- a batch up to here was handed to the sink, maybe not acked
    dropped INTEGER NOT NULL DEFAULT 0
);
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRIM_EVERY_ACKS = 20
_MEMORY_ROWS = 20_000


class DurableBuffer:
    """The only thing between drivers and sinks. Not thread-safe: use it from the event loop."""

    def __init__(self, path: str | Path, sinks: Iterable[str], max_size: int = 2**30,
                 sync: str = "process", counters: Counters = COUNTERS,
                 memory_rows: int = _MEMORY_ROWS) -> None:
        self.path = Path(path)
        self.max_size = max_size
        self.counters = counters
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only FULL (fsync per commit) survives
        # a power cut.
        self._db.execute(f"PRAGMA synchronous={'FULL' if sync == 'power' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self.sinks = list(sinks)
        for sink in self.sinks:
            # A new sink starts at the current end: it does not replay history it never had.
            self._db.execute("INSERT OR IGNORE INTO cursors (sink, last_id, inflight_id) "
                             "SELECT ?, COALESCE(MAX(id), 0), COALESCE(MAX(id), 0) FROM readings",
                             (sink,))
        self._acks = 0
        # The in-memory tail: the readings with row ids `_tail_first` ... in order, no gaps.
        self._tail: deque[Reading] = deque()
        self._tail_first = 0
        self._memory_rows = memory_rows
        self.unconfirmed_at_start = self._count_unconfirmed()

    def close(self) -> None:
        self._trim()
        self._db.close()

    def append(self, readings: Sequence[Reading]) -> None:
        """Store a batch in one transaction."""
        if not readings:
            return
        values = _row_values(readings)
        width = len(_COLUMNS)
        whole = len(readings) // _ROWS_PER_INSERT * _ROWS_PER_INSERT * width
        with self._db:
            self._db.execute("BEGIN")
            # Rows in groups of _ROWS_PER_INSERT per statement (one VALUES list each): binding
            # is most of SQLite's cost per row here, and a statement per row costs 3x more
            # (measured). VALUES rows are inserted in their order.
            self._db.executemany(_insert_sql(_ROWS_PER_INSERT),
                                 (values[i:i + _ROWS_PER_INSERT * width] for i in
                                  range(0, whole, _ROWS_PER_INSERT * width)))
            self._db.executemany(_insert_sql(1), (values[i:i + width] for i in
                                                  range(whole, len(values), width)))
            # One writer, one transaction: the batch got consecutive ids ending here.
            last_id = int(self._db.execute("SELECT last_insert_rowid()").fetchone()[0])
        self._remember(last_id - len(readings) + 1, readings)
        self.counters.inc("gateway_buffer_appended_total", len(readings))
        while self.used_bytes() > self.max_size and self._drop_oldest():
            pass

    def _remember(self, first_id: int, readings: Sequence[Reading]) -> None:
        if not self._tail or first_id != self._tail_first + len(self._tail):
            self._tail.clear()
            self._tail_first = first_id
        self._tail.extend(readings)
        excess = len(self._tail) - self._memory_rows
        if excess > 0:
            self._forget(self._tail_first + excess - 1)

    def _forget(self, up_to_id: int) -> None:
        """Drop the in-memory readings with ids up to `up_to_id`."""
        while self._tail and self._tail_first <= up_to_id:
            self._tail.popleft()
            self._tail_first += 1

    def read(self, sink: str, limit: int) -> tuple[int, list[Reading]]:
        """Up to `limit` readings after the sink's cursor, oldest first, and the last row id."""
        cursor = self.cursor(sink)
        if self._tail and self._tail_first <= cursor + 1 < self._tail_first + len(self._tail):
            start = cursor + 1 - self._tail_first
            batch = list(islice(self._tail, start, start + limit))
            return cursor + len(batch), batch
        rows = self._db.execute(
            "SELECT id, device, tag, value, quality, ts_us, unit, error FROM readings "
            "WHERE id > (SELECT last_id FROM cursors WHERE sink = ?) ORDER BY id LIMIT ?",
            (sink, limit)).fetchall()
        if not rows:
            return self.cursor(sink), []
        return rows[-1][0], [_from_row(row) for row in rows]

    def mark_inflight(self, sink: str, last_id: int) -> None:
        """The sink is about to send up to `last_id`: if the process dies before the ack, the
        next start knows those readings may be delivered twice (and counts them)."""
        self._db.execute("UPDATE cursors SET inflight_id = MAX(inflight_id, ?) WHERE sink = ?",
                         (last_id, sink))

    def ack(self, sink: str, last_id: int) -> None:
        """The sink delivered everything up to `last_id`."""
        self._db.execute("UPDATE cursors SET last_id = MAX(last_id, ?), "
                         "inflight_id = MAX(inflight_id, ?) WHERE sink = ?",
                         (last_id, last_id, sink))
        self._acks += 1
        if self._acks % _TRIM_EVERY_ACKS == 0:
            self._trim()
        elif self._tail:  # the in-memory tail goes as soon as every sink passed it
            lowest = self._db.execute("SELECT MIN(last_id) FROM cursors").fetchone()[0]
            self._forget(int(lowest))

    def cursor(self, sink: str) -> int:
        row = self._db.execute("SELECT last_id FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def depth(self, sink: str) -> int:
        """Readings waiting for this sink."""
        row = self._db.execute("SELECT COUNT(*) FROM readings WHERE id > ?",
                               (self.cursor(sink),)).fetchone()
        return int(row[0])

    def oldest_unsent_age(self, sink: str, now: datetime | None = None) -> float:
        """Seconds since the source timestamp of the oldest reading this sink has not sent."""
        row = self._db.execute("SELECT ts_us FROM readings WHERE id > ? ORDER BY id LIMIT 1",
                               (self.cursor(sink),)).fetchone()
        if row is None:
            return 0.0
        now_us = _micros(now or datetime.now(UTC))
        return max(0.0, (now_us - int(row[0])) / 1e6)

    def dropped(self, sink: str) -> int:
        """Readings this sink lost to `max_size` over the buffer's whole life."""
        row = self._db.execute("SELECT dropped FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def _count_unconfirmed(self) -> dict[str, int]:
        """Per sink, readings sent before a crash whose ack never came: they will be sent again."""
        rows = self._db.execute("SELECT sink, inflight_id - last_id FROM cursors").fetchall()
        counts = {sink: int(n) for sink, n in rows if n > 0}
        for sink, count in counts.items():
            self.counters.inc("gateway_sink_possible_duplicates_total", count, sink=sink)
            log.info("%s: %d readings were in flight at the last stop and are sent again "
                     "(at-least-once)", sink, count)
        return counts

    def used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _trim(self) -> None:
        """Delete the rows every sink has delivered."""
        self._db.execute("DELETE FROM readings WHERE id <= (SELECT MIN(last_id) FROM cursors)")
        lowest = self._db.execute("SELECT MIN(last_id) FROM cursors").fetchone()[0]
        if lowest is not None:
            self._forget(int(lowest))

    def _drop_oldest(self) -> bool:
        """Free a tenth of the rows, oldest first, counting what each sink never sent.
        False when there is nothing left to drop."""
        self._trim()
        count, first = self._db.execute("SELECT COUNT(*), MIN(id) FROM readings").fetchone()
        if not count:
            return False
        cut = first + max(1, count // 10) - 1
        with self._db:
            self._db.execute("BEGIN")
            for sink in self.sinks:
                lost = self._db.execute("SELECT COUNT(*) FROM readings WHERE id > ? AND id <= ?",
                                        (self.cursor(sink), cut)).fetchone()[0]
                if lost:
                    self.counters.inc("gateway_buffer_dropped_total", lost, sink=sink)
                    self._db.execute("UPDATE cursors SET dropped = dropped + ? WHERE sink = ?",
                                     (lost, sink))
                    log.warning("buffer full (%d bytes): dropped %d oldest readings unsent to %s",
                                self.max_size, lost, sink)
            self._db.execute("DELETE FROM readings WHERE id <= ?", (cut,))
            self._db.execute("UPDATE cursors SET last_id = MAX(last_id, ?), "
                             "inflight_id = MAX(inflight_id, ?)", (cut, cut))
        self._forget(cut)
        return True


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_COLUMNS = ("device", "tag", "value", "quality", "ts_us", "unit", "error")
_ROWS_PER_INSERT = 50  # 350 parameters per statement (SQLite allows 999 or more)
_QUALITY_TEXT = {quality: quality.value for quality in Quality}  # Enum.value is slow (profiled)


@cache
def _insert_sql(rows: int) -> str:
    row = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    return f"INSERT INTO readings ({', '.join(_COLUMNS)}) VALUES " + ", ".join([row] * rows)


def _row_values(readings: Sequence[Reading]) -> list[object]:
    """The column values of every reading, one flat list in the order of _COLUMNS."""
    values: list[object] = []
    extend = values.extend
    last_ts: datetime | None = None
    ts_us = 0
    for r in readings:
        if r.source_ts is not last_ts:  # the readings of one poll share their timestamp
            last_ts = r.source_ts
            ts_us = _micros(last_ts)
        extend((r.device, r.tag, _encode_value(r.value), _QUALITY_TEXT[r.quality], ts_us, r.unit,
                r.error))
    return values


def _encode_value(value: object) -> str:
    """JSON text of a value; numbers without the JSON encoder (the same text, 5x faster)."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):  # type: ignore[arg-type]
        return repr(value)
    return json.dumps(value)


def _from_row(row: tuple[Any, ...]) -> Reading:
    _, device, tag, value, quality, ts_us, unit, error = row
    return Reading(device=device, tag=tag, value=json.loads(value), quality=Quality(quality),
                   unit=unit, error=error, source_ts=_EPOCH + timedelta(microseconds=ts_us))


def buffer_report(path: str | Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per sink: backlog, age of the oldest unsent reading, drops, unconfirmed sends. Opens the
    file read-only, so it works beside a running gateway (`gateway status`)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        now_us = _micros(now or datetime.now(UTC))
        report = []
        for sink, last_id, inflight_id, dropped in db.execute(
                "SELECT sink, last_id, inflight_id, dropped FROM cursors ORDER BY sink"):
            depth, oldest = db.execute(
                "SELECT COUNT(*), MIN(ts_us) FROM readings WHERE id > ?", (last_id,)).fetchone()
            report.append({
                "sink": sink, "depth": depth, "dropped": dropped,
                "unconfirmed": max(0, inflight_id - last_id),
                "oldest_unsent_age_s": round((now_us - oldest) / 1e6, 3) if oldest else 0.0,
            })
        return report
    finally:
        db.close()
