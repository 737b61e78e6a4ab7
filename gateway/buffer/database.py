"""Opening the buffer's SQLite file: a file that cannot be opened or read is moved aside, what
can be read out of it goes into a fresh file, and one line says what was saved and lost."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from gateway.buffer.highwater import Mark
from gateway.buffer.legacy import Converted, convert
from gateway.buffer.salvage import Outcome, assess, salvage_file
from gateway.buffer.schema import INSERT_CYCLES, SCHEMA, is_damage, set_sequence
from gateway.errors import BufferError
from gateway.metrics import Counters

log = logging.getLogger(__name__)

# A whole-file check at start reads every page: about 15 ms per MiB from the page cache, far
# more from an SD card. Past this size only the schema, the cursors and the ends are read at
# start, and damage further in is met (and stepped over, counted) when a sink reads it.
FULL_CHECK_MAX_BYTES = 64 * 2**20
_COMPANIONS = ("-wal", "-shm")


def open_database(path: Path, sync: str, mark: Mark | None, sinks: list[str],
                  counters: Counters) -> sqlite3.Connection:
    """The buffer file at `path`, sound. Raises BufferError (one line: what to do) only when
    no buffer file can be had there at all."""
    _refuse_directory(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BufferError(f"cannot create the buffer directory {path.parent} "
                          f"({exc.strerror or exc}): set gateway.buffer.path to a writable place",
                          path=str(path)) from None
    try:
        db = _open_checked(path, sync)
    except sqlite3.Error as exc:
        problem = str(exc)
    else:
        damage = _convert(db, path, counters)
        if damage is None:
            return db
        db.close()
        problem = damage
    if not path.exists():
        raise BufferError(f"cannot create the buffer file {path} ({problem}): make "
                          f"{path.parent} writable or set gateway.buffer.path to a writable place",
                          path=str(path))
    moved = _move_aside(path, problem)
    try:
        db = _open_checked(path, sync)
    except sqlite3.Error as exc:
        raise BufferError(f"cannot create a fresh buffer file {path} ({exc}) after moving the "
                          f"damaged one to {moved.name}: make {path.parent} writable",
                          path=str(path)) from None
    outcome = assess(salvage_file(moved), mark, sinks)
    _replay(db, outcome)
    _report(path, moved, problem, outcome, counters)
    return db


def connect(path: Path, sync: str) -> sqlite3.Connection:
    """Open (or create) the file with the buffer's settings and schema."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use a write-ahead log (journal mode {mode})")
        # NORMAL in WAL mode survives a process crash; only FULL (fsync per commit) survives
        # a power cut.
        db.execute(f"PRAGMA synchronous={'FULL' if sync == 'power' else 'NORMAL'}")
        db.executescript(SCHEMA)
        # A write: a read-only file fails here rather than at the first append.
        db.execute("PRAGMA user_version = 2")
        db.execute(f"PRAGMA wal_autocheckpoint={_checkpoint_pages(path, db)}")
    except BaseException:
        db.close()
        raise
    return db


def _checkpoint_pages(path: Path, db: sqlite3.Connection) -> int:
    """SQLite checkpoints its log after 1,000 pages (4 MiB). On a small disk the log alone
    would fill it before that (measured on a 2 MiB tmpfs: a 2 MiB log beside a 4 KiB file), so
    there it checkpoints after an eighth of the disk."""
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return 1000
    return max(16, min(1000, stats.f_blocks * stats.f_frsize // 8 // page_size))


def _open_checked(path: Path, sync: str) -> sqlite3.Connection:
    db = connect(path, sync)
    try:
        _check(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Raise sqlite3.DatabaseError if the file is damaged (as far as a check at start sees)."""
    db.execute("SELECT sink, last_id, inflight_id, dropped FROM cursors").fetchall()
    db.execute("SELECT MIN(last_seq), MAX(last_seq) FROM cycles").fetchone()
    if path.stat().st_size > FULL_CHECK_MAX_BYTES:
        return
    problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        first = " ".join(str(problems[0]).split())  # one line: it can hold several
        raise sqlite3.DatabaseError(f"database disk image is malformed ({first})")


def _convert(db: sqlite3.Connection, path: Path, counters: Counters) -> str | None:
    """Convert a file of the first schema (legacy.py). The damage, when its old rows cannot
    be read (the file is then salvaged); another failure (a full disk) is a BufferError that
    leaves the file as it was."""
    try:
        done = convert(db)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        db.close()
        raise BufferError(f"cannot convert the buffer file {path} to the new schema ({exc}): "
                          "nothing was changed or lost; free space (or fix the disk) and start "
                          "again", path=str(path)) from None
    except sqlite3.Error as exc:
        db.close()
        raise BufferError(f"cannot convert the buffer file {path} to the new schema ({exc}): "
                          "nothing was changed or lost; start again", path=str(path)) from None
    if done is not None:
        _report_conversion(path, done, counters)
    return None


def _report_conversion(path: Path, done: Converted, counters: Counters) -> None:
    if done.damaged:
        counters.inc("gateway_buffer_damaged_total", done.damaged, cause="row")
        log.error("buffer: %d damaged rows of %s were skipped while converting it to one row "
                  "per cycle (%d readings lost)", done.damaged, path, done.damaged)


def _refuse_directory(path: Path) -> None:
    if path.is_dir():
        raise BufferError(f"the buffer path {path} is a directory: set gateway.buffer.path to a "
                          f"file in it (e.g. {path / 'buffer.db'})", path=str(path))


def _move_aside(path: Path, problem: str) -> Path:
    """Rename the file (and its -wal and -shm, so that SQLite still pairs them) to
    `<name>.corrupt-<UTC time>`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    serial = 1
    while moved.exists():
        serial += 1
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{serial}")
    try:
        os.rename(path, moved)
        for suffix in _COMPANIONS:
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                os.rename(companion, moved.with_name(moved.name + suffix))
    except OSError as exc:
        raise BufferError(f"the buffer file {path} cannot be read ({problem}) and cannot be "
                          f"moved aside ({exc.strerror or exc}): move or delete it, or set "
                          "gateway.buffer.path to a writable place", path=str(path)) from None
    return moved


def _replay(db: sqlite3.Connection, outcome: Outcome) -> None:
    """Write the salvaged rows (with their sequence numbers) and cursors into the fresh file."""
    with db:
        db.execute("BEGIN")
        db.executemany(INSERT_CYCLES, (outcome.saved[i] for i in sorted(outcome.saved)))
        db.executemany("INSERT OR REPLACE INTO cursors (sink, last_id, inflight_id, dropped) "
                       "VALUES (?, ?, ?, ?)",
                       ((sink, *cursor) for sink, cursor in outcome.cursors.items()))
        set_sequence(db, outcome.top)


def _report(path: Path, moved: Path, problem: str, outcome: Outcome,
            counters: Counters) -> None:
    saved = outcome.saved_readings
    counters.inc("gateway_buffer_salvaged_total", saved)
    if outcome.lost:
        counters.inc("gateway_buffer_damaged_total", outcome.lost, cause="file")
    lost = ("an unknown number (no cursors and no high-water mark were readable)"
            if outcome.lost is None else str(outcome.lost))
    log.error("buffer: %s could not be read (%s): moved to %s; %d unsent readings saved into "
              "a fresh file, %s lost", path, problem, moved.name, saved, lost)

