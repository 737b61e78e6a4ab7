"""Persistence of the KPI engine's state in the buffer's database, so that a restart in the
middle of a shift resumes its figures. Its own sqlite3 connection, its own table; a disk
problem never stops the gateway: it is logged once (until it clears) and the call returns."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS kpi_state (device TEXT PRIMARY KEY, state TEXT NOT NULL)"
_BUSY_TIMEOUT_SECONDS = 0.5  # the buffer writes in short transactions; do not wait longer


class KpiStateStore:
    """`load()` the saved states at start, `save(engine.snapshot())` after each tick and at
    shutdown, `close()` at the end. Safe to call from one thread at a time (any thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._failing = False

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS,
                                 check_same_thread=False, isolation_level=None)
            try:
                db.execute(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def load(self) -> dict[str, Any]:
        """device -> saved state ({} when nothing is saved or the file cannot be read)."""
        with self._lock:
            try:
                rows = self._connect().execute("SELECT device, state FROM kpi_state").fetchall()
            except (sqlite3.Error, OSError) as exc:
                self._failed("read", exc)
                return {}
            self._recovered()
        states: dict[str, Any] = {}
        for device, text in rows:
            try:
                states[device] = json.loads(text)
            except (TypeError, ValueError):
                log.warning("KPI state of %s in %s is not readable; its shift figures start "
                            "again", device, self.path)
        return states

    def save(self, states: Mapping[str, Mapping[str, Any]]) -> bool:
        """Write every device's state in one transaction; False when it could not be written."""
        rows = [(device, json.dumps(state, separators=(",", ":")))
                for device, state in states.items()]
        with self._lock:
            try:
                db = self._connect()
                with _transaction(db):
                    db.executemany("INSERT OR REPLACE INTO kpi_state (device, state) "
                                   "VALUES (?, ?)", rows)
            except (sqlite3.Error, OSError) as exc:
                self._failed("write", exc)
                return False
            self._recovered()
        return True

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def _failed(self, action: str, exc: Exception) -> None:
        if not self._failing:
            log.warning("cannot %s the KPI state in %s (%s); the shift figures go on in memory "
                        "and a restart would start them again", action, self.path, exc)
            self._failing = True
        else:
            log.debug("KPI state %s still failing: %s", action, exc)
        if self._db is not None:  # reopen next time: the file may have been moved aside
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _recovered(self) -> None:
        if self._failing:
            log.info("KPI state in %s is written again", self.path)
            self._failing = False


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection autocommits)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
