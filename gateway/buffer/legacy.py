"""Opening a buffer file of the first schema (one SQLite row per reading, table `readings`):
its rows are converted to rows of whole cycles (cycles.py) in one transaction at open, with
their sequence numbers and the cursors as they are, so a plant that upgrades keeps its
backlog. A crash during the conversion leaves the old file as it was (the transaction rolls
back) and the next start converts it again."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.buffer.cycles import ROW_READINGS, StoredCycle, split_rows
from gateway.buffer.rows import SELECT_COLUMNS, DamagedRow, from_row
from gateway.buffer.schema import INSERT_CYCLES, set_sequence
from gateway.models import Reading

log = logging.getLogger(__name__)

_CHUNK = 10_000  # old rows read per query


@dataclass(frozen=True)
class Converted:
    readings: int  # moved into cycle rows
    damaged: int  # old rows that did not decode (skipped: each a reading lost)
    top: int  # the highest id the old table ever gave out


def has_legacy_rows(db: sqlite3.Connection) -> bool:
    """Whether the file still has the first schema's table."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                      "name = 'readings'").fetchone() is not None


def legacy_sequence(db: sqlite3.Connection) -> int:
    """The highest id the old table gave out (AUTOINCREMENT kept it in sqlite_sequence)."""
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row and type(row[0]) is int else 0


def convert(db: sqlite3.Connection) -> Converted | None:
    """Convert the old table, if there is one, in one transaction (None: there was none).
    SQLite errors (a damaged page, a full disk) propagate with nothing changed."""
    if not has_legacy_rows(db):
        return None
    began = time.monotonic()
    moved = damaged = top = 0
    with db:
        db.execute("BEGIN IMMEDIATE")
        top = legacy_sequence(db)
        for cycles, skipped in _cycles(db):
            db.executemany(INSERT_CYCLES, cycles)
            moved += sum(c[1] for c in cycles)
            damaged += skipped
            top = max(top, max((c[0] for c in cycles), default=0))
        db.execute("DROP TABLE readings")
        set_sequence(db, top)
    log.info("buffer: converted %d readings from one row each to one row per cycle in %.1fs",
             moved, time.monotonic() - began)
    return Converted(moved, damaged, top)


def _cycles(db: sqlite3.Connection) -> Iterator[tuple[list[StoredCycle], int]]:
    """The old rows, in id order, as cycle rows of consecutive ids (a gap starts a new row),
    with the number of rows skipped as damaged, a chunk at a time."""
    after = 0
    run: list[Reading] = []
    run_first = 0
    while True:
        rows = db.execute(f"SELECT {SELECT_COLUMNS} FROM readings WHERE id > ? ORDER BY id "
                          "LIMIT ?", (after, _CHUNK)).fetchall()
        if not rows:
            break
        cycles: list[StoredCycle] = []
        skipped = 0
        for row in rows:
            after = row[0]
            try:
                reading = from_row(row)
            except DamagedRow:
                skipped += 1
                continue
            if run and (row[0] != run_first + len(run) or len(run) == ROW_READINGS):
                cycles += split_rows(run_first, run)
                run = []
            if not run:
                run_first = row[0]
            run.append(reading)
        yield cycles, skipped
    if run:
        yield split_rows(run_first, run), 0
