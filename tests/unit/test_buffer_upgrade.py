"""A buffer file written before rows held whole cycles (one SQLite row per reading) opens with
its backlog, cursors, numbering and drop counts as they were: a plant that upgrades loses
nothing (gateway/buffer/legacy.py)."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer, buffer_report
from gateway.buffer.highwater import Mark, encode, mark_path
from gateway.buffer.rows import micros
from gateway.metrics import Counters
from gateway.models import Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
# The first schema, as the gateway wrote it (gateway/buffer/database.py before the change).
OLD_SCHEMA = """
CREATE TABLE readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, tag TEXT NOT NULL, value TEXT NOT NULL, quality TEXT NOT NULL,
    ts_us INTEGER NOT NULL, unit TEXT, error TEXT
);
CREATE TABLE cursors (
    sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL, inflight_id INTEGER NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0
);
PRAGMA user_version = 1;
"""


def old_file(path: Path, ids: list[int], cursors: dict[str, tuple[int, int, int]],
             sequence: int | None = None) -> Path:
    """A file of the first schema holding reading `id - 1` (value) at each of `ids`."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(OLD_SCHEMA)
        db.executemany(
            "INSERT INTO readings (id, device, tag, value, quality, ts_us, unit, error) "
            "VALUES (?, 'press-01', 'counter', ?, 'good', ?, 'pcs', NULL)",
            [(i, json.dumps(i - 1), micros(T0 + timedelta(milliseconds=i))) for i in ids])
        db.executemany("INSERT INTO cursors VALUES (?, ?, ?, ?)",
                       [(sink, *cursor) for sink, cursor in cursors.items()])
        if sequence is not None:  # what AUTOINCREMENT kept after the rows were trimmed
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'readings'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)",
                       (sequence,))
    db.close()
    return path


def drain(buffer: DurableBuffer, sink: str, size: int = 333) -> list[object]:
    delivered: list[object] = []
    for _ in range(10_000):
        last, batch = buffer.read(sink, size)
        if not batch:
            return delivered
        delivered += [r.value for r in batch]
        buffer.ack(sink, last)
    raise AssertionError("read never ran dry")


def test_the_backlog_and_cursors_of_an_old_file_survive_the_upgrade(tmp_path: Path) -> None:
    path = old_file(tmp_path / "buffer.db", list(range(101, 1001)),
                    {"mqtt": (300, 350, 7), "influxdb": (100, 100, 0)})
    mark_path(path).write_bytes(encode(Mark(committed=1000, acked=100)))
    counters = Counters()
    buffer = DurableBuffer(path, ["mqtt", "influxdb"], counters=counters)
    assert counters.get("gateway_buffer_damaged_total", cause="wal") == 0
    assert buffer.unconfirmed_at_start == {"mqtt": 50}  # sent before the upgrade, not acked
    assert buffer.dropped("mqtt") == 7
    assert buffer.depth("mqtt") == 700 and buffer.depth("influxdb") == 900
    first = buffer.read("influxdb", 1)[1][0]
    assert (first.value, first.unit, first.source_ts) == (100, "pcs",
                                                          T0 + timedelta(milliseconds=101))
    assert drain(buffer, "mqtt") == list(range(300, 1000))
    buffer.append([first.model_copy(update={"value": -1})])  # numbering goes on after 1000
    assert buffer.read("mqtt", 10)[0] == 1001
    tables = {name for (name,) in buffer._db.execute("SELECT name FROM sqlite_master")}
    assert "readings" not in tables
    buffer.close()
    reopened = DurableBuffer(path, ["mqtt", "influxdb"])  # and the converted file reopens
    assert drain(reopened, "influxdb") == [*range(100, 1000), -1]
    reopened.close()


def test_gaps_in_the_old_ids_stay_gaps(tmp_path: Path) -> None:
    ids = list(range(1, 51)) + list(range(80, 121))  # a salvage's replay left 51-79 out
    path = old_file(tmp_path / "buffer.db", ids, {"mqtt": (30, 30, 0)})
    buffer = DurableBuffer(path, ["mqtt"])
    assert buffer.depth("mqtt") == 20 + 41
    assert drain(buffer, "mqtt", size=7) == [i - 1 for i in ids if i > 30]


def test_an_emptied_old_file_goes_on_numbering_after_its_sequence(tmp_path: Path) -> None:
    path = old_file(tmp_path / "buffer.db", [], {"mqtt": (400, 400, 0)}, sequence=500)
    buffer = DurableBuffer(path, ["mqtt"])
    buffer.append([Reading(device="press-01", tag="counter", value=1, source_ts=T0)])
    assert buffer.read("mqtt", 10)[0] == 501


def test_a_damaged_old_row_is_skipped_and_counted_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = old_file(tmp_path / "buffer.db", list(range(1, 101)), {"mqtt": (0, 0, 0)})
    with sqlite3.connect(path) as db:
        db.execute("UPDATE readings SET value = X'00ff', ts_us = 'soon' WHERE id = 50")
    db.close()
    counters = Counters()
    buffer = DurableBuffer(path, ["mqtt"], counters=counters)
    assert drain(buffer, "mqtt") == [v for v in range(100) if v != 49]
    assert counters.get("gateway_buffer_damaged_total", cause="row") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "(1 readings lost)" in errors[0] and "\n" not in errors[0]


def test_status_reads_an_old_file_no_gateway_has_opened_yet(tmp_path: Path) -> None:
    path = old_file(tmp_path / "buffer.db", list(range(1, 11)),
                    {"mqtt": (4, 6, 0), "influxdb": (10, 10, 2)})
    report = {row["sink"]: row for row in buffer_report(path, now=T0 + timedelta(seconds=61))}
    assert report["mqtt"]["depth"] == 6 and report["mqtt"]["unconfirmed"] == 2
    assert report["mqtt"]["oldest_unsent_age_s"] == pytest.approx(60.995)
    assert report["influxdb"] == {"sink": "influxdb", "depth": 0, "dropped": 2,
                                  "unconfirmed": 0, "oldest_unsent_age_s": 0.0}


def test_status_lists_the_devices_of_an_old_file(tmp_path: Path) -> None:
    from gateway.buffer import buffer_devices

    path = old_file(tmp_path / "buffer.db", list(range(1, 11)), {"mqtt": (0, 0, 0)})
    assert buffer_devices(path) == [("press-01", 10, 0, micros(T0 + timedelta(milliseconds=10)))]
