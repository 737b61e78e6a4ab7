"""Reading what can be read out of a damaged buffer file, and what it cost.

Row by row through SQLite, stepping over the damaged pages; then, when the `sqlite3` command
line tool is installed, its `.recover` (which reads every page it can parse) fills in more.
Neither needs the file to be sound; neither writes to it. Rows of whole cycles (cycles.py) are
kept as they are; rows of the first schema (one reading each, a file not yet converted) become
cycles of one reading.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.buffer.cycles import StoredCycle, decode_cycle, split_rows
from gateway.buffer.highwater import Mark
from gateway.buffer.legacy import legacy_sequence
from gateway.buffer.rows import SELECT_COLUMNS, DamagedRow, from_row
from gateway.buffer.schema import top_sequence

log = logging.getLogger(__name__)

Cursor = tuple[int, int, int]  # last_id, inflight_id, dropped
_PROBE_ONE_BY_ONE = 4096  # damaged ids probed one at a time before probing in growing steps
_MAX_ID = 2**62
_RECOVER_TIMEOUT = 300.0


@dataclass
class Salvage:
    """What came out of a damaged file."""

    cycles: dict[int, StoredCycle] = field(default_factory=dict)  # last_seq -> decodable row
    cursors: dict[str, Cursor] | None = None
    sequence: int = 0  # the highest sequence number the file ever gave out, if it still says
    damaged: int = 0  # rows found whose content does not decode


def salvage_file(path: Path) -> Salvage:
    """Everything readable in the buffer file at `path` (and its -wal)."""
    result = Salvage()
    with suppress(sqlite3.Error):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            # Without it a file shorter than its header says (truncated) is refused whole.
            db.execute("PRAGMA writable_schema = ON")
            result.cursors = _read_cursors(db)
            result.sequence = _read_sequence(db)
            _scan_rows(db, result)
    _recover_with_cli(path, result)
    return result


def _read_cursors(db: sqlite3.Connection) -> dict[str, Cursor] | None:
    try:
        rows = db.execute("SELECT sink, last_id, inflight_id, dropped FROM cursors").fetchall()
    except sqlite3.Error:
        return None
    cursors = {}
    for sink, last_id, inflight_id, dropped in rows:
        if isinstance(sink, str) and all(type(v) is int for v in (last_id, inflight_id, dropped)):
            cursors[sink] = (last_id, max(inflight_id, last_id), dropped)
    return cursors


def _read_sequence(db: sqlite3.Connection) -> int:
    with suppress(sqlite3.Error, TypeError, ValueError):
        return max(top_sequence(db), legacy_sequence(db))
    return legacy_sequence(db)


@dataclass(frozen=True)
class _Table:
    """How to read one table's rows by key, and keep the decodable ones."""

    name: str
    key: str
    columns: str


_CYCLES = _Table("cycles", "last_seq", "last_seq, count, ts_us, data")
_LEGACY = _Table("readings", "id", SELECT_COLUMNS)


def _keep(result: Salvage, table: _Table, row: tuple[Any, ...]) -> None:
    if type(row[0]) is not int or row[0] in result.cycles:
        return
    try:
        if table is _CYCLES:
            last_seq, count, ts_us, data = row
            if type(count) is not int or type(ts_us) is not int:
                raise DamagedRow("not a cycle")
            decode_cycle(data, count)
            result.cycles[last_seq] = (last_seq, count, ts_us, data)
        else:
            result.cycles[row[0]] = split_rows(row[0], [from_row(row)])[0]
    except DamagedRow:
        result.damaged += 1


def _scan_rows(db: sqlite3.Connection, result: Salvage) -> None:
    for table in (_CYCLES, _LEGACY):
        try:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (table.name,)).fetchone()
        except sqlite3.Error:
            exists = True  # the schema is damaged: try anyway
        if exists:
            _scan_table(db, table, result)


def _scan_table(db: sqlite3.Connection, table: _Table, result: Salvage) -> None:
    """Every row SQLite can still reach, in key order; a damaged page is stepped over."""
    after: int | None = 0
    while after is not None:
        try:
            for row in db.execute(f"SELECT {table.columns} FROM {table.name} WHERE "
                                  f"{table.key} > ? ORDER BY {table.key}", (after,)):
                _keep(result, table, row)
                after = row[0]
            return
        except sqlite3.Error:
            after = _step_over_damage(db, table, result, after)


def _step_over_damage(db: sqlite3.Connection, table: _Table, result: Salvage,
                      after: int) -> int | None:
    """The key to scan on from after a failure past `after`, or None when nothing is left.
    Keys are tried one by one first (one damaged leaf page holds tens of rows), then in
    doubling steps (a damaged interior page hides thousands)."""
    for candidate in range(after + 1, after + 1 + _PROBE_ONE_BY_ONE):
        try:
            row = db.execute(f"SELECT {table.columns} FROM {table.name} WHERE {table.key} = ?",
                             (candidate,)).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            _keep(result, table, row)
            return candidate
    step = _PROBE_ONE_BY_ONE
    while after + step < _MAX_ID:
        try:
            row = db.execute(f"SELECT {table.key} FROM {table.name} WHERE {table.key} > ? "
                             f"ORDER BY {table.key} LIMIT 1", (after + step,)).fetchone()
        except sqlite3.Error:
            step *= 2
            continue
        return None if row is None else after + step
    return None


def _recover_with_cli(path: Path, result: Salvage) -> None:
    """Add what `sqlite3 .recover` finds that the row scan did not (when the tool exists)."""
    cli = shutil.which("sqlite3")
    if cli is None:
        return
    try:
        done = subprocess.run([cli, "-readonly", str(path), ".recover"], capture_output=True,
                              timeout=_RECOVER_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("sqlite3 .recover failed: %s", exc)
        return
    with closing(sqlite3.connect(":memory:")) as recovered:
        # .recover writes SQL; a statement it could not make whole fails here and ends the
        # script, which leaves what came before it.
        with suppress(sqlite3.Error):
            recovered.executescript(done.stdout.decode("utf-8", errors="replace"))
        for table in (_CYCLES, _LEGACY):
            with suppress(sqlite3.Error):
                for row in recovered.execute(f"SELECT {table.columns} FROM {table.name} "
                                             f"ORDER BY {table.key}"):
                    _keep(result, table, row)
        if result.cursors is None:
            result.cursors = _read_cursors(recovered)
        result.sequence = max(result.sequence, _read_sequence(recovered))


@dataclass(frozen=True)
class Outcome:
    """What a salvage saved and lost, and where the new file starts."""

    saved: dict[int, StoredCycle]  # rows some sink still needs, by last_seq
    cursors: dict[str, Cursor]  # per configured sink
    top: int  # the highest sequence number given out before: the fresh file goes on after it
    lost: int | None  # None: unknown (no cursors and no high-water mark)
    saved_readings: int = 0  # readings in `saved` that some sink still needs


def assess(salvage: Salvage, mark: Mark | None, sinks: list[str]) -> Outcome:
    """Which salvaged rows to replay, the cursors to replay them with, and how many readings
    that some sink still needed are gone (at most: numbers that were never used count too)."""
    cycles = salvage.cycles.values()
    top = max(mark.committed if mark else 0, salvage.sequence,
              max((c[0] for c in cycles), default=0))
    known = salvage.cursors or {}
    floors = [mark.acked] if mark else []
    if known:
        floors.append(min(cursor[0] for cursor in known.values()))
    floor = max(floors) if floors else None
    start = floor if floor is not None else min((c[0] - c[1] for c in cycles), default=0)
    saved = {c[0]: c for c in cycles if c[0] > start}
    saved_readings = sum(min(c[1], c[0] - start) for c in saved.values())
    cursors = {}
    for sink in sinks:
        last_id, inflight_id, dropped = known.get(sink, (start, start, 0))
        last_id = max(last_id, start)
        cursors[sink] = (last_id, max(inflight_id, last_id), dropped)
    lost = None if floor is None else max(0, top - floor - saved_readings)
    return Outcome(saved, cursors, max(top, start), lost, saved_readings)
