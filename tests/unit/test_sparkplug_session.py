"""Sparkplug session state: bdSeq in its file, seq wrapping, aliases, and what device cycles
become (DBIRTH on first readings, DDEATH once when unreachable, historical backlog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.models import Quality, Reading
from gateway.sinks.sparkplug.payload import epoch_ms
from gateway.sinks.sparkplug.session import (
    AliasTable,
    BdSeqStore,
    Birth,
    Data,
    Death,
    NodeState,
    SequenceCounter,
)

pytestmark = pytest.mark.unit
TS = datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)
LIVE_SINCE = epoch_ms(TS)


@settings(deadline=None, max_examples=20)  # one fsync per connect
@given(st.integers(0, 255), st.integers(1, 300))
def test_bdseq_counts_up_per_connect_and_wraps_at_256(start: int, connects: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.bdseq"
        path.write_text(f"{start}\n")
        store = BdSeqStore(path)
        taken = [store.next() for _ in range(connects)]
        assert taken == [(start + 1 + i) % 256 for i in range(connects)]
        assert BdSeqStore(path).last() == taken[-1]  # another store (a restart) reads it


def test_bdseq_starts_at_0_without_a_file_and_after_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.bdseq"
    assert BdSeqStore(path).next() == 0
    assert path.read_text() == "0\n"
    for junk in ("", "abc", "256", "-1"):
        path.write_text(junk)
        assert BdSeqStore(path).next() == 0


@given(st.integers(1, 1000))
def test_seq_is_0_at_birth_then_counts_and_wraps(messages: int) -> None:
    counter = SequenceCounter()
    counter.take()  # anything before a birth is forgotten by it
    assert counter.birth() == 0
    assert [counter.take() for _ in range(messages)] == [(1 + i) % 256 for i in range(messages)]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), min_size=1))
def test_aliases_are_stable_per_device_and_tag_and_unique(keys: list[tuple[str, str]]) -> None:
    table = AliasTable()
    first = {key: table.alias(*key) for key in keys}
    assert all(table.alias(*key) == alias for key, alias in first.items())
    assert len(set(first.values())) == len(first)
    assert min(first.values()) == 1


def good(tag: str, value: float, ts: datetime = TS, device: str = "press") -> Reading:
    return Reading(device=device, tag=tag, value=value, source_ts=ts)


def bad(tag: str, ts: datetime = TS, error: str = "timeout") -> Reading:
    return Reading(device="press", tag=tag, value=None, quality=Quality.BAD, source_ts=ts,
                   error=error)


def test_first_readings_give_the_dbirth_then_data() -> None:
    state = NodeState()
    assert state.births() == []  # nothing known yet: DBIRTH waits for readings
    first = state.apply([good("a", 1), good("b", 2)], {"a", "b"}, LIVE_SINCE)
    assert [type(s) for s in first] == [Birth]
    later = TS + timedelta(seconds=1)
    step = state.apply([good("a", 3, later)], {"a", "b"}, LIVE_SINCE)[0]
    assert isinstance(step, Data) and [r.value for r in step.readings] == [3]
    assert step.historical == (False,)


def test_a_new_tag_gives_a_new_dbirth_with_every_tag() -> None:
    state = NodeState()
    state.apply([good("a", 1)], set(), LIVE_SINCE)
    step = state.apply([good("b", 2)], set(), LIVE_SINCE)[0]
    assert isinstance(step, Birth) and {r.tag for r in step.readings} == {"a", "b"}


def test_unreachable_gives_one_ddeath_then_a_dbirth_when_back() -> None:
    state = NodeState()
    state.apply([good("a", 1), good("b", 2)], {"a", "b"}, LIVE_SINCE)
    down = [bad("a"), bad("b")]
    assert [type(s) for s in state.apply(down, {"a", "b"}, LIVE_SINCE)] == [Death]
    assert state.apply(down, {"a", "b"}, LIVE_SINCE) == []
    assert state.births() == []  # a new session does not birth a device that is down
    back = state.apply([good("a", 5), good("b", 6)], {"a", "b"}, LIVE_SINCE)
    assert [type(s) for s in back] == [Birth]


def test_some_bad_tags_or_different_reasons_are_bad_values_not_a_death() -> None:
    state = NodeState()
    state.apply([good("a", 1), good("b", 2)], {"a", "b"}, LIVE_SINCE)
    assert [type(s) for s in state.apply([bad("a")], {"a", "b"}, LIVE_SINCE)] == [Data]
    mixed = [bad("a", error="exception 2"), bad("b", error="exception 3")]
    assert [type(s) for s in state.apply(mixed, {"a", "b"}, LIVE_SINCE)] == [Data]


def test_a_device_down_before_its_first_answer_is_not_born() -> None:
    state = NodeState()
    assert state.apply([bad("a"), bad("b")], {"a", "b"}, LIVE_SINCE) == []
    assert state.births() == []


def test_backlog_is_historical_and_the_first_live_data_catches_up() -> None:
    state = NodeState()
    old = TS - timedelta(minutes=5)
    state.apply([good("a", 1, old), good("b", 1, old)], {"a", "b"}, LIVE_SINCE)
    births = state.births()  # the new session
    assert [r.value for r in births[0].readings] == [1, 1]
    backlog = state.apply([good("b", 2, old + timedelta(seconds=1))], {"a", "b"}, LIVE_SINCE)
    assert isinstance(backlog[0], Data) and backlog[0].historical == (True,)
    live = state.apply([good("a", 3, TS)], {"a", "b"}, LIVE_SINCE)[0]
    assert isinstance(live, Data)
    assert [(r.tag, r.value) for r in live.readings] == [("a", 3), ("b", 2)]
    assert live.historical == (False, False)  # b's newest value, now as current
    again = state.apply([good("a", 4, TS)], {"a", "b"}, LIVE_SINCE)[0]
    assert isinstance(again, Data) and len(again.readings) == 1


def test_forget_drops_devices_removed_by_a_reload() -> None:
    state = NodeState()
    state.apply([good("a", 1, device="x")], set(), LIVE_SINCE)
    state.apply([good("a", 1, device="y")], set(), LIVE_SINCE)
    state.forget({"y"})
    assert [b.device for b in state.births()] == ["y"]


def test_a_cycle_across_the_session_start_flags_only_its_older_readings() -> None:
    state = NodeState()
    state.apply([good("a", 1), good("b", 1), good("c", 1)], {"a", "b", "c"}, LIVE_SINCE)
    old = TS - timedelta(seconds=2)
    step = state.apply([good("a", 2, old), good("b", 2, TS), good("c", 2, old)],
                       {"a", "b", "c"}, LIVE_SINCE)[0]
    assert isinstance(step, Data) and step.historical == (True, False, True)


def test_a_first_reading_bad_and_the_rest_good_is_data_not_a_death() -> None:
    state = NodeState()
    state.apply([good("a", 1), good("b", 2)], {"a", "b"}, LIVE_SINCE)
    step = state.apply([bad("a"), good("b", 3)], {"a", "b"}, LIVE_SINCE)
    assert [type(s) for s in step] == [Data]


def test_a_tag_seen_while_down_gives_a_dbirth_with_it_when_back() -> None:
    state = NodeState()
    state.apply([good("a", 1)], {"a", "b"}, LIVE_SINCE)
    state.apply([bad("a"), bad("b")], {"a", "b"}, LIVE_SINCE)
    back = state.apply([good("a", 2), good("b", 3)], {"a", "b"}, LIVE_SINCE)[0]
    assert isinstance(back, Birth) and {r.tag for r in back.readings} == {"a", "b"}
    step = state.apply([good("a", 4), good("b", 5)], {"a", "b"}, LIVE_SINCE)[0]
    assert isinstance(step, Data)
