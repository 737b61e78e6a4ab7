"""The buffer's pure parts: the in-memory tail, the high-water mark's format, and what a
salvage saved and lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.buffer.cycles import StoredCycle, split_rows
from gateway.buffer.highwater import Mark, decode, encode
from gateway.buffer.memory import MemoryTail
from gateway.buffer.salvage import Salvage, assess
from gateway.models import Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 24, tzinfo=UTC)


def readings(count: int, start: int = 0) -> list[Reading]:
    return [Reading(device="d", tag="t", value=start + i, source_ts=T0 + timedelta(seconds=i))
            for i in range(count)]


def test_memory_only_readings_are_written_in_chunks_in_order() -> None:
    tail = MemoryTail(next_id=11)
    tail.add(readings(5), saved=True)
    tail.add(readings(7, 5), saved=False)
    assert (tail.first, tail.end, tail.saved_up_to, tail.unsaved) == (11, 23, 15, 7)
    chunks = list(tail.unsaved_chunks(3))
    assert [first for first, _ in chunks] == [16, 19, 22]
    assert [r.value for _, chunk in chunks for r in chunk] == list(range(5, 12))


def test_past_the_limit_the_oldest_memory_only_readings_go_first() -> None:
    tail = MemoryTail(next_id=1)
    tail.add(readings(4), saved=True)
    tail.add(readings(10, 4), saved=False)
    assert tail.drop_unsaved(6) == (5, 8)
    assert tail.unsaved == 6
    assert [r.value for r in tail.get(tail.first - 1, 100) or []] == list(range(8, 14))


def test_readings_every_sink_delivered_are_forgotten_even_if_never_written() -> None:
    tail = MemoryTail(next_id=1)
    tail.add(readings(10), saved=False)
    tail.forget(6)
    assert tail.unsaved == 4
    assert [first for first, _ in tail.unsaved_chunks(100)] == [7]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "add_saved", "forget", "drop", "cap", "save"]),
                          st.integers(0, 20)), max_size=40))
def test_tail_holds_consecutive_ids_and_counts_memory_only_readings(
        steps: list[tuple[str, int]]) -> None:
    tail = MemoryTail(next_id=1)
    for action, n in steps:
        if action.startswith("add"):  # each reading's value is its id
            tail.add(readings(n, tail.end), saved=action == "add_saved")
        elif action == "forget":
            tail.forget(tail.first + n)
        elif action == "drop":
            tail.drop_unsaved(n)
        elif action == "cap":
            tail.limit_saved(n)
        else:
            tail.mark_saved(tail.first + n)
        held = tail.get(tail.first - 1, 10_000) or []
        assert len(held) == len(tail)
        assert [r.value for r in held] == list(range(tail.first, tail.end))
        assert 0 <= tail.unsaved <= len(tail)
        assert sum(len(c) for _, c in tail.unsaved_chunks(7)) == tail.unsaved


@given(st.integers(0, 2**63), st.integers(0, 2**63))
def test_high_water_mark_round_trips(committed: int, acked: int) -> None:
    assert decode(encode(Mark(committed, acked))) == Mark(committed, acked)


@given(st.binary(max_size=64))
def test_random_bytes_are_no_high_water_mark(data: bytes) -> None:
    assert decode(data) is None


def test_a_damaged_high_water_mark_is_ignored() -> None:
    data = bytearray(encode(Mark(100, 40)))
    data[10] ^= 0xFF
    assert decode(bytes(data)) is None


def _rows(ids: range, size: int = 1) -> dict[int, StoredCycle]:
    """Salvaged rows of `size` readings each, numbered `ids`."""
    return {row[0]: row for first in ids[::size]
            for row in split_rows(first, [Reading(device="d", tag="t", value=1, source_ts=T0)]
                                  * min(size, ids.stop - first))}


def test_salvage_counts_what_the_sinks_had_not_sent_and_did_not_come_back() -> None:
    salvage = Salvage(cycles=_rows(range(101, 151)), cursors={"mqtt": (100, 120, 3)}, sequence=0)
    outcome = assess(salvage, Mark(committed=200, acked=90), ["mqtt", "influxdb"])
    assert outcome.lost == 50  # 101..200 needed, 101..150 saved
    assert outcome.top == 200
    assert outcome.cursors == {"mqtt": (100, 120, 3), "influxdb": (100, 100, 0)}
    assert sorted(outcome.saved) == list(range(101, 151))


def test_salvage_skips_rows_every_sink_had_delivered() -> None:
    salvage = Salvage(cycles=_rows(range(1, 11)), cursors=None)
    outcome = assess(salvage, Mark(committed=10, acked=6), ["mqtt"])
    assert sorted(outcome.saved) == [7, 8, 9, 10]
    assert outcome.lost == 0
    assert outcome.cursors == {"mqtt": (6, 6, 0)}


def test_without_cursors_or_a_mark_the_loss_is_unknown_and_everything_is_resent() -> None:
    outcome = assess(Salvage(cycles=_rows(range(5, 9)), cursors=None), None, ["mqtt"])
    assert outcome.lost is None
    assert outcome.cursors == {"mqtt": (4, 4, 0)}
    assert sorted(outcome.saved) == [5, 6, 7, 8]


def test_salvage_keeps_a_cycle_some_sink_had_sent_part_of_and_counts_per_reading() -> None:
    salvage = Salvage(cycles=_rows(range(1, 101), size=25), cursors={"mqtt": (30, 30, 0)})
    outcome = assess(salvage, Mark(committed=120, acked=30), ["mqtt"])
    assert sorted(outcome.saved) == [50, 75, 100]  # 26-50 holds 31-50, which mqtt still needs
    assert outcome.saved_readings == 70
    assert outcome.lost == 20  # 101..120
    assert outcome.cursors == {"mqtt": (30, 30, 0)}
