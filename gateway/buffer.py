"""Durable store-and-forward buffer: SQLite in WAL mode, one cursor per sink.

Readings are appended in batches; each sink reads forward from its own cursor and advances it
only after the far side acknowledged the batch, so a crash, an outage or a restart loses nothing
that reached this file (at-least-once). Rows every sink has passed are trimmed. Past `max_size`
the oldest rows are deleted and every sink that had not sent them counts them as dropped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
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
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRIM_EVERY_ACKS = 20


class DurableBuffer:
    """The only thing between drivers and sinks. Not thread-safe: use it from the event loop."""

    def __init__(self, path: str | Path, sinks: Iterable[str], max_size: int = 2**30,
                 sync: str = "process", counters: Counters = COUNTERS) -> None:
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
            self._db.execute("INSERT OR IGNORE INTO cursors VALUES (?, "
                             "(SELECT COALESCE(MAX(id), 0) FROM readings))", (sink,))
        self._acks = 0

    def close(self) -> None:
        self._trim()
        self._db.close()

    def append(self, readings: Sequence[Reading]) -> None:
        """Store a batch in one transaction."""
        if not readings:
            return
        rows = [_to_row(r) for r in readings]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO readings (device, tag, value, quality, ts_us, unit, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.counters.inc("gateway_buffer_appended_total", len(rows))
        while self.used_bytes() > self.max_size and self._drop_oldest():
            pass

    def read(self, sink: str, limit: int) -> tuple[int, list[Reading]]:
        """Up to `limit` readings after the sink's cursor, oldest first, and the last row id."""
        rows = self._db.execute(
            "SELECT id, device, tag, value, quality, ts_us, unit, error FROM readings "
            "WHERE id > (SELECT last_id FROM cursors WHERE sink = ?) ORDER BY id LIMIT ?",
            (sink, limit)).fetchall()
        if not rows:
            return self.cursor(sink), []
        return rows[-1][0], [_from_row(row) for row in rows]

    def ack(self, sink: str, last_id: int) -> None:
        """The sink delivered everything up to `last_id`."""
        self._db.execute("UPDATE cursors SET last_id = MAX(last_id, ?) WHERE sink = ?",
                         (last_id, sink))
        self._acks += 1
        if self._acks % _TRIM_EVERY_ACKS == 0:
            self._trim()

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

    def used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _trim(self) -> None:
        """Delete the rows every sink has delivered."""
        self._db.execute("DELETE FROM readings WHERE id <= (SELECT MIN(last_id) FROM cursors)")

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
                    log.warning("buffer full (%d bytes): dropped %d oldest readings unsent to %s",
                                self.max_size, lost, sink)
            self._db.execute("DELETE FROM readings WHERE id <= ?", (cut,))
            self._db.execute("UPDATE cursors SET last_id = MAX(last_id, ?)", (cut,))
        return True


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _to_row(r: Reading) -> tuple[object, ...]:
    return (r.device, r.tag, json.dumps(r.value), r.quality.value, _micros(r.source_ts),
            r.unit, r.error)


def _from_row(row: tuple[Any, ...]) -> Reading:
    _, device, tag, value, quality, ts_us, unit, error = row
    return Reading(device=device, tag=tag, value=json.loads(value), quality=Quality(quality),
                   unit=unit, error=error, source_ts=_EPOCH + timedelta(microseconds=ts_us))
