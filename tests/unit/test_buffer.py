"""The durable buffer: per-sink cursors, ack-only advance, trimming, bounded size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.buffer import DurableBuffer
from gateway.buffer.rows import micros
from gateway.metrics import Counters
from gateway.models import Quality, Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)


def readings(count: int, start: int = 0) -> list[Reading]:
    return [Reading(device="press-01", tag="counter", value=start + i,
                    source_ts=T0 + timedelta(milliseconds=start + i)) for i in range(count)]


def values(batch: list[Reading]) -> list[object]:
    return [r.value for r in batch]


def test_each_sink_reads_from_its_own_cursor(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"])
    buffer.append(readings(10))
    last, batch = buffer.read("mqtt", 4)
    assert values(batch) == [0, 1, 2, 3]
    buffer.ack("mqtt", last)
    assert values(buffer.read("mqtt", 100)[1]) == list(range(4, 10))
    assert values(buffer.read("influxdb", 100)[1]) == list(range(10))
    assert buffer.depth("mqtt") == 6 and buffer.depth("influxdb") == 10


def test_unacked_batch_is_read_again(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    buffer.append(readings(3))
    first = buffer.read("mqtt", 10)
    assert buffer.read("mqtt", 10) == first


def test_cursors_and_rows_survive_a_reopen(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"])
    buffer.append(readings(5))
    buffer.ack("mqtt", buffer.read("mqtt", 2)[0])
    buffer.close()
    reopened = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"])
    assert values(reopened.read("mqtt", 10)[1]) == [2, 3, 4]
    assert values(reopened.read("influxdb", 10)[1]) == [0, 1, 2, 3, 4]


def test_every_value_type_and_field_round_trips(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    original = [
        Reading(device="d", tag="f", value=21.5, source_ts=T0, unit="degC"),
        Reading(device="d", tag="i", value=-7, source_ts=T0),
        Reading(device="d", tag="b", value=True, source_ts=T0),
        Reading(device="d", tag="s", value="ABC-12", source_ts=T0),
        Reading(device="d", tag="x", value=None, quality=Quality.BAD, source_ts=T0,
                error="modbus exception 2"),
    ]
    buffer.append(original)
    assert buffer.read("mqtt", 10)[1] == original  # from the in-memory tail
    buffer.close()
    assert DurableBuffer(tmp_path / "b.db", ["mqtt"]).read("mqtt", 10)[1] == original  # file


@pytest.mark.parametrize("count", [1, 49, 50, 51, 123, 250])
def test_batches_of_any_size_keep_their_order_and_ids_in_the_file(tmp_path: Path,
                                                                   count: int) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    buffer.append(readings(3))
    buffer.append(readings(count, 3))
    assert buffer.read("mqtt", 1000)[0] == count + 3
    buffer.close()
    reopened = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    last_id, batch = reopened.read("mqtt", 1000)
    assert last_id == count + 3
    assert batch == readings(count + 3)


def test_a_sink_behind_the_in_memory_tail_reads_the_file(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"], memory_rows=5)
    for start in range(0, 20, 4):
        buffer.append(readings(4, start))
    delivered: list[object] = []
    while batch := buffer.read("mqtt", 3)[1]:
        delivered += values(batch)
        buffer.ack("mqtt", buffer.read("mqtt", 3)[0])
    assert delivered == list(range(20))
    assert values(buffer.read("influxdb", 100)[1]) == list(range(20))


def test_rows_acked_by_every_sink_are_trimmed(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["a", "b"])
    for start in range(0, 50, 10):  # five cycles, one row each
        buffer.append(readings(10, start))
    for _ in range(20):
        buffer.ack("a", buffer.read("a", 100)[0])
    buffer.ack("b", buffer.read("b", 15)[0])  # the first cycle and half the second
    buffer.close()
    reopened = DurableBuffer(tmp_path / "b.db", ["a", "b"])
    rows, count = reopened._db.execute("SELECT COUNT(*), SUM(count) FROM cycles").fetchone()
    assert (rows, count) == (4, 40)  # the half-sent row stays whole
    assert reopened.depth("b") == 35 and reopened.depth("a") == 0
    assert values(reopened.read("b", 100)[1]) == list(range(15, 50))


def test_a_sink_reads_a_cycle_in_parts_and_resumes_inside_it(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"], memory_rows=1)
    buffer.append(readings(250))
    buffer.append(readings(250, 250))
    delivered: list[object] = []
    for _ in range(6):  # 100 at a time: reads start and end inside rows
        last, batch = buffer.read("mqtt", 100)
        delivered += values(batch)
        buffer.ack("mqtt", last)
        assert last == len(delivered)
    assert delivered == list(range(500))
    buffer.close()


def test_full_buffer_drops_oldest_and_counts_them(tmp_path: Path) -> None:
    counters = Counters()
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"], max_size=256 * 1024, counters=counters)
    for start in range(0, 20_000, 1000):
        buffer.append(readings(1000, start))
    assert buffer.used_bytes() <= 256 * 1024 + 64 * 1024
    dropped = counters.get("gateway_buffer_dropped_total", sink="mqtt")
    _, batch = buffer.read("mqtt", 100_000)
    remaining = values(batch)
    assert dropped > 0
    assert len(remaining) + dropped == 20_000
    assert remaining == list(range(20_000 - len(remaining), 20_000))  # only the oldest went


def test_a_new_sink_starts_at_the_end(tmp_path: Path) -> None:
    DurableBuffer(tmp_path / "b.db", ["mqtt"]).append(readings(5))
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"])
    assert buffer.read("influxdb", 10)[1] == []
    assert len(buffer.read("mqtt", 10)[1]) == 5


def test_oldest_unsent_age_follows_the_cursor(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    assert buffer.oldest_unsent_age("mqtt") == 0.0
    buffer.append(readings(1))
    assert buffer.oldest_unsent_age("mqtt", now=T0 + timedelta(seconds=5)) == pytest.approx(5.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=10))
def test_acked_batches_deliver_everything_once_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                        batch_sizes: list[int]) -> None:
    buffer = DurableBuffer(tmp_path_factory.mktemp("b") / "b.db", ["s"])
    start = 0
    delivered: list[object] = []
    for size in batch_sizes:
        buffer.append(readings(size, start))
        start += size
        last, batch = buffer.read("s", 7)
        delivered += values(batch)
        buffer.ack("s", last)
    while batch := buffer.read("s", 7)[1]:
        delivered += values(batch)
        buffer.ack("s", buffer.read("s", 7)[0])
    assert delivered == list(range(start))


def test_batch_in_flight_at_a_crash_is_resent_and_counted(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    buffer.append(readings(10))
    last, _ = buffer.read("mqtt", 4)
    buffer.mark_inflight("mqtt", last)  # then the process dies before the ack
    counters = Counters()
    reopened = DurableBuffer(tmp_path / "b.db", ["mqtt"], counters=counters)
    assert reopened.unconfirmed_at_start == {"mqtt": 4}
    assert counters.get("gateway_sink_possible_duplicates_total", sink="mqtt") == 4
    assert values(reopened.read("mqtt", 100)[1]) == list(range(10))


def test_dropped_count_is_kept_across_restarts(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"], max_size=128 * 1024)
    for start in range(0, 10_000, 1000):
        buffer.append(readings(1000, start))
    dropped = buffer.dropped("mqtt")
    assert dropped > 0
    buffer.close()
    assert DurableBuffer(tmp_path / "b.db", ["mqtt"]).dropped("mqtt") == dropped


def test_report_reads_backlog_beside_a_writer(tmp_path: Path) -> None:
    from gateway.buffer import buffer_report

    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt", "influxdb"])
    buffer.append(readings(10))
    buffer.ack("mqtt", buffer.read("mqtt", 10)[0])
    report = {row["sink"]: row for row in buffer_report(tmp_path / "b.db",
                                                        now=T0 + timedelta(seconds=60))}
    assert report["mqtt"]["depth"] == 0
    assert report["influxdb"]["depth"] == 10
    assert report["influxdb"]["oldest_unsent_age_s"] == pytest.approx(60.0)


def test_an_array_reading_survives_the_buffer(tmp_path: Path) -> None:
    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    axes = Reading(device="cnc", tag="axes", value=[1.5, 2, True, "x", None], source_ts=T0)
    buffer.append([axes])
    assert buffer.read("mqtt", 10)[1] == [axes]
    buffer.close()


def test_devices_in_the_buffer_count_what_some_sink_still_needs(tmp_path: Path) -> None:
    from gateway.buffer import buffer_devices

    buffer = DurableBuffer(tmp_path / "b.db", ["mqtt"])
    buffer.append(readings(10))
    buffer.append([Reading(device="oven", tag="t", value=None, quality=Quality.BAD,
                           error="timeout", source_ts=T0), *readings(5, 10)])
    buffer.ack("mqtt", 4)  # part of the first row was delivered
    assert buffer_devices(tmp_path / "b.db") == [
        ("oven", 1, 1, micros(T0)),
        ("press-01", 11, 0, micros(T0 + timedelta(milliseconds=14)))]
    buffer.close()
