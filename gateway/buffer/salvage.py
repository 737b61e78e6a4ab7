"""Reading what can be read out of a damaged buffer file, and what it cost.

Row by row through SQLite, stepping over the damaged pages; then, when the `sqlite3` command
line tool is installed, its `.recover` (which reads every page it can parse) fills in more.
Neither needs the file to be sound; neither writes to it.
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

from gateway.buffer.highwater import Mark
from gateway.buffer.rows import SELECT_COLUMNS, DamagedRow, from_row

log = logging.getLogger(__name__)

Cursor = tuple[int, int, int]  # last_id, inflight_id, dropped
_PROBE_ONE_BY_ONE = 4096  # damaged ids probed one at a time before probing in growing steps
_MAX_ID = 2**62
_RECOVER_TIMEOUT = 300.0


@dataclass
class Salvage:
    """What came out of a damaged file."""

    rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # id -> decodable row
    cursors: dict[str, Cursor] | None = None
    sequence: int = 0  # the highest id the file ever gave out, if it still says
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
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row and type(row[0]) is int else 0


def _keep(result: Salvage, row: tuple[Any, ...]) -> None:
    if type(row[0]) is not int or row[0] in result.rows:
        return
    try:
        from_row(row)
    except DamagedRow:
        result.damaged += 1
        return
    result.rows[row[0]] = row


def _scan_rows(db: sqlite3.Connection, result: Salvage) -> None:
    """Every row SQLite can still reach, in id order; a damaged page is stepped over."""
    after: int | None = 0
    while after is not None:
        try:
            for row in db.execute(f"SELECT {SELECT_COLUMNS} FROM readings WHERE id > ? "
                                  "ORDER BY id", (after,)):
                _keep(result, row)
                after = row[0]
            return
        except sqlite3.Error:
            after = _step_over_damage(db, result, after)


def _step_over_damage(db: sqlite3.Connection, result: Salvage, after: int) -> int | None:
    """The id to scan on from after a failure past `after`, or None when nothing is left.
    Ids are tried one by one first (one damaged leaf page holds tens of rows), then in
    doubling steps (a damaged interior page hides thousands)."""
    for candidate in range(after + 1, after + 1 + _PROBE_ONE_BY_ONE):
        try:
            row = db.execute(f"SELECT {SELECT_COLUMNS} FROM readings WHERE id = ?",
                             (candidate,)).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            _keep(result, row)
            return candidate
    step = _PROBE_ONE_BY_ONE
    while after + step < _MAX_ID:
        try:
            row = db.execute("SELECT id FROM readings WHERE id > ? ORDER BY id LIMIT 1",
                             (after + step,)).fetchone()
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
        with suppress(sqlite3.Error):
            for row in recovered.execute(f"SELECT {SELECT_COLUMNS} FROM readings ORDER BY id"):
                _keep(result, row)
        if result.cursors is None:
            result.cursors = _read_cursors(recovered)
        result.sequence = max(result.sequence, _read_sequence(recovered))


@dataclass(frozen=True)
class Outcome:
    """What a salvage saved and lost, and where the new file starts."""

    saved: dict[int, tuple[Any, ...]]  # rows some sink still needs, by id
    cursors: dict[str, Cursor]  # per configured sink
    top: int  # the highest id given out before: the fresh file goes on after it
    lost: int | None  # None: unknown (no cursors and no high-water mark)


def assess(salvage: Salvage, mark: Mark | None, sinks: list[str]) -> Outcome:
    """Which salvaged rows to replay, the cursors to replay them with, and how many readings
    that some sink still needed are gone (at most: ids that were never used count too)."""
    ids = salvage.rows.keys()
    top = max(mark.committed if mark else 0, salvage.sequence, max(ids, default=0))
    known = salvage.cursors or {}
    floors = [mark.acked] if mark else []
    if known:
        floors.append(min(cursor[0] for cursor in known.values()))
    floor = max(floors) if floors else None
    start = floor if floor is not None else min(ids, default=1) - 1
    saved = {i: row for i, row in salvage.rows.items() if i > start}
    cursors = {}
    for sink in sinks:
        last_id, inflight_id, dropped = known.get(sink, (start, start, 0))
        last_id = max(last_id, start)
        cursors[sink] = (last_id, max(inflight_id, last_id), dropped)
    lost = None if floor is None else max(0, top - floor - len(saved))
    return Outcome(saved, cursors, max(top, start), lost)
