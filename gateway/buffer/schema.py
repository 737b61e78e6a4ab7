"""The buffer file's tables, and the statements more than one module needs."""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS cycles (  -- one row per append (a cycle), see cycles.py
    last_seq INTEGER PRIMARY KEY,  -- the sequence number of the row's last reading
    count INTEGER NOT NULL,        -- it holds the readings last_seq - count + 1 ... last_seq
    ts_us INTEGER NOT NULL,        -- the earliest source timestamp in it
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,      -- delivered (acknowledged) up to here
    inflight_id INTEGER NOT NULL,  -- a batch up to here was handed to the sink, maybe not acked
    dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
INSERT_CYCLES = "INSERT INTO cycles (last_seq, count, ts_us, data) VALUES (?, ?, ?, ?)"


def set_sequence(db: sqlite3.Connection, at_least: int) -> None:
    """Record that sequence numbers up to `at_least` were given out (they never go back:
    cursors and the high-water mark refer to them)."""
    db.execute("INSERT INTO meta (key, value) VALUES ('top', ?) ON CONFLICT(key) "
               "DO UPDATE SET value = MAX(value, excluded.value)", (at_least,))


def top_sequence(db: sqlite3.Connection) -> int:
    """The highest sequence number recorded as given out (set_sequence)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'top'").fetchone()
    return int(row[0]) if row else 0


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's content is wrong, not its disk."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in str(exc)
