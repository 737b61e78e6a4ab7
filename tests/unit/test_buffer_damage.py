"""A buffer file damaged on purpose (real SQLite files, real bytes): the buffer moves it aside,
saves what it can, counts the rest, says so in one line, and starts."""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.buffer import DurableBuffer
from gateway.errors import BufferError
from gateway.metrics import Counters
from gateway.models import Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def readings(count: int, start: int = 0) -> list[Reading]:
    return [Reading(device="press-01", tag="counter", value=start + i,
                    source_ts=T0 + timedelta(milliseconds=start + i)) for i in range(count)]


def written_buffer(path: Path, count: int = 3000, acked: int = 500) -> Path:
    """A closed buffer file holding `count` readings, the first `acked` delivered."""
    buffer = DurableBuffer(path, ["mqtt"], counters=Counters())
    for start in range(0, count, 100):
        buffer.append(readings(100, start))
    buffer.ack("mqtt", acked)
    buffer.close()
    return path


def drain(buffer: DurableBuffer, sink: str = "mqtt") -> list[object]:
    delivered: list[object] = []
    for _ in range(10_000):
        last, batch = buffer.read(sink, 500)
        if not batch:
            return delivered
        delivered += [r.value for r in batch]
        buffer.ack(sink, last)
    raise AssertionError("read never ran dry")


def reopen(path: Path) -> tuple[DurableBuffer, Counters]:
    counters = Counters()
    return DurableBuffer(path, ["mqtt"], counters=counters), counters


def one_error_line(caplog: pytest.LogCaptureFixture) -> str:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "\n" not in message
    return message


def assert_accounted(path: Path, delivered: list[object], counters: Counters) -> None:
    """Every unsent reading (500..2999) was delivered or counted lost, and what came is in
    order; the damaged file is kept beside the fresh one."""
    assert delivered == sorted(set(delivered))
    assert all(500 <= v < 3000 for v in delivered)  # type: ignore[operator]
    lost = counters.get("gateway_buffer_damaged_total", cause="file")
    assert len(delivered) + lost == 2500
    assert counters.get("gateway_buffer_salvaged_total") == len(delivered)
    assert list(path.parent.glob("buffer.db.corrupt-*"))


def test_random_bytes_in_the_middle_are_moved_aside_and_the_rest_saved(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = written_buffer(tmp_path / "buffer.db")
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(random.Random(1).randbytes(4096))
    buffer, counters = reopen(path)
    delivered = drain(buffer)
    line = one_error_line(caplog)
    assert "moved to buffer.db.corrupt-" in line and "saved" in line and "lost" in line
    assert_accounted(path, delivered, counters)
    assert len(delivered) > 2000  # one 4 KiB page holds about a hundred rows
    buffer.close()


def test_a_truncated_file_gives_back_what_it_still_holds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = written_buffer(tmp_path / "buffer.db")
    os.truncate(path, path.stat().st_size * 2 // 3)
    buffer, counters = reopen(path)
    delivered = drain(buffer)
    one_error_line(caplog)
    assert_accounted(path, delivered, counters)
    assert len(delivered) > 1000
    assert 0 < counters.get("gateway_buffer_damaged_total", cause="file") < 2500


def test_a_random_header_starts_a_fresh_buffer_and_counts_the_loss(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = written_buffer(tmp_path / "buffer.db")
    with open(path, "r+b") as f:
        f.write(random.Random(2).randbytes(100))
    buffer, counters = reopen(path)
    delivered = drain(buffer)
    assert "file is not a database" in one_error_line(caplog)
    assert_accounted(path, delivered, counters)
    buffer.append(readings(3, 5000))  # and the fresh file works
    assert drain(buffer) == [5000, 5001, 5002]


def test_an_emptied_file_starts_empty_and_says_what_the_mark_says_was_there(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = written_buffer(tmp_path / "buffer.db")
    os.truncate(path, 0)
    buffer, counters = reopen(path)
    assert drain(buffer) == []
    assert "2500 committed readings" in one_error_line(caplog)
    assert counters.get("gateway_buffer_damaged_total", cause="wal") == 2500


def test_a_read_only_file_is_moved_aside_and_everything_saved(tmp_path: Path) -> None:
    """Root writes to anything: the check runs without the capability that allows it."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's override of file modes")
    path = written_buffer(tmp_path / "buffer.db")
    path.chmod(0o444)
    script = textwrap.dedent(f"""
        from gateway.buffer import DurableBuffer
        from gateway.metrics import Counters
        counters = Counters()
        buffer = DurableBuffer({str(path)!r}, ["mqtt"], counters=counters)
        last, batch = buffer.read("mqtt", 10_000)
        print(len(batch), batch[0].value, counters.get("gateway_buffer_salvaged_total"))
        buffer.close()
    """)
    done = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
         sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2500", "500", "2500"]
    assert "could not be read" in done.stderr and "2500 unsent readings saved" in done.stderr
    assert os.access(path, os.W_OK)  # the fresh file (root is back to writing anything)
    moved = next(tmp_path.glob("buffer.db.corrupt-*[0-9]Z"))
    assert moved.stat().st_mode & 0o777 == 0o444


def test_a_directory_at_the_path_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "buffer.db").mkdir()
    with pytest.raises(BufferError, match=r"is a directory: set gateway\.buffer\.path") as error:
        DurableBuffer(tmp_path / "buffer.db", ["mqtt"])
    assert "\n" not in str(error.value)


def test_gateway_run_says_what_to_do_about_a_directory_without_a_traceback(
        tmp_path: Path) -> None:
    (tmp_path / "buffer.db").mkdir()
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent(f"""
        gateway: {{id: gw, buffer: {{path: {tmp_path / 'buffer.db'}}}, http: {{enabled: false}}}}
        devices: []
        sinks: {{mqtt: {{url: "mqtt://127.0.0.1:1"}}}}
    """))
    done = subprocess.run([sys.executable, "-m", "gateway", "run", "-c", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    # The start's preflight finds it before anything connects: a config error (exit 2), one line.
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "gateway.buffer.path" in last and "is a directory" in last


WRITER = """
import sys, time
from datetime import UTC, datetime
from gateway.buffer import DurableBuffer
from gateway.models import Reading
buffer = DurableBuffer(sys.argv[1], ["mqtt"])
now = datetime.now(UTC)
for start in range(0, 96, 8):
    buffer.append([Reading(device="d", tag="t", value=start + i, source_ts=now)
                   for i in range(8)])
print("written", flush=True)
time.sleep(600)
"""


def killed_writer(path: Path) -> None:
    """96 readings committed by a process that is then SIGKILLed (its log never checkpointed)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            cwd=ROOT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait(10)
    assert Path(f"{path}-wal").stat().st_size > 0


def test_a_deleted_write_ahead_log_after_a_kill_is_counted_not_silent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.db"
    killed_writer(path)
    Path(f"{path}-wal").unlink()
    buffer, counters = reopen(path)
    assert drain(buffer) == []
    assert "96 committed readings (ids 1-96) are missing" in one_error_line(caplog)
    assert counters.get("gateway_buffer_damaged_total", cause="wal") == 96


def test_random_bytes_in_the_write_ahead_log_are_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.db"
    killed_writer(path)
    wal = Path(f"{path}-wal")
    with open(wal, "r+b") as f:
        f.seek(wal.stat().st_size // 2)
        f.write(random.Random(3).randbytes(512))
    buffer, counters = reopen(path)
    delivered = drain(buffer)
    lost = counters.get("gateway_buffer_damaged_total", cause="wal")
    assert lost > 0 and "committed readings" in one_error_line(caplog)
    assert delivered == list(range(len(delivered)))  # what SQLite kept: the commits before
    assert len(delivered) + lost == 96


def test_one_damaged_row_is_skipped_and_counted_and_reading_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = written_buffer(tmp_path / "buffer.db", count=300, acked=0)  # rows of 100 readings
    with sqlite3.connect(path) as db:  # what a damaged page can decode to
        db.execute("UPDATE cycles SET data = X'00ff', ts_us = 'soon' WHERE last_seq = 200")
    buffer, counters = reopen(path)
    delivered = drain(buffer)
    assert delivered == [v for v in range(300) if not 100 <= v < 200]
    assert counters.get("gateway_buffer_damaged_total", cause="row") == 100
    assert "readings 101-200" in one_error_line(caplog)


@pytest.mark.parametrize("damage", [b"\x01[1,2]", b'\x01[["d",0,100],[],[],null,null,null]',
                                    b"\x02[", b"\x07", b""])
def test_a_batch_of_only_damaged_rows_does_not_stall_the_sink(tmp_path: Path,
                                                               damage: bytes) -> None:
    path = written_buffer(tmp_path / "buffer.db", count=300, acked=0)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE cycles SET data = ? WHERE last_seq <= 200", (damage,))
    buffer, counters = reopen(path)
    last, batch = buffer.read("mqtt", 50)
    assert [r.value for r in batch][:1] == [200] and last == 250
    assert counters.get("gateway_buffer_damaged_total", cause="row") == 200


def test_a_removed_sinks_cursor_no_longer_holds_trimming_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.db"
    buffer = DurableBuffer(path, ["mqtt", "influxdb"])
    buffer.append(readings(100))
    buffer.ack("mqtt", 100)
    buffer.close()
    caplog.set_level(logging.WARNING)
    buffer = DurableBuffer(path, ["mqtt"])
    assert any("cursor of sink influxdb" in r.getMessage() and "100 readings" in r.getMessage()
               for r in caplog.records)
    buffer.append(readings(10, 100))
    for _ in range(20):  # trimming runs every 20 acks
        buffer.ack("mqtt", buffer.read("mqtt", 100)[0])
    assert buffer._db.execute("SELECT COUNT(*) FROM cycles").fetchone()[0] == 0
    assert [s for (s,) in buffer._db.execute("SELECT sink FROM cursors")] == ["mqtt"]
