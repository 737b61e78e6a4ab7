"""The KPI engine: hand-computed OEE scenarios, unknown time, counters, shifts, restart resume."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.buffer import DurableBuffer
from gateway.kpi.config import KPI_TAGS, KpiSettings, OeeConfig
from gateway.kpi.counters import counter_delta, is_wrap
from gateway.kpi.engine import KpiEngine, MachineKpi
from gateway.kpi.store import KpiStateStore
from gateway.models import Quality, Reading

pytestmark = pytest.mark.unit

DEVICE = "press-01"
EARLY = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # a Monday; the calendar below is in UTC
THREE_SHIFTS = [{"name": "early", "start": "06:00", "end": "14:00"},
                {"name": "late", "start": "14:00", "end": "22:00"},
                {"name": "night", "start": "22:00", "end": "06:00"}]
TYPES = {"running": "bool", "state": "uint16", "parts": "uint16", "rejects": "uint16",
         "good": "uint32"}


def make_engine(shifts: list[dict[str, Any]] | None = None, timezone: str = "UTC",
                stale_after: float | None = None, restored: dict[str, Any] | None = None,
                **oee: Any) -> KpiEngine:
    block = {"running": {"tag": "running"}, "total_count": "parts",
             "reject_count": "rejects", "ideal_cycle_time": "800ms", **oee}
    kpi = KpiSettings(timezone=timezone, shifts=shifts or THREE_SHIFTS, kpi_interval="10s")
    machine = MachineKpi(DEVICE, OeeConfig(**block), TYPES, stale_after=stale_after)
    return KpiEngine(kpi, [machine], restored=restored)


def reading(tag: str, value: Any, quality: Quality = Quality.GOOD,
            ts: datetime = EARLY) -> Reading:
    return Reading(device=DEVICE, tag=tag, value=value, quality=quality, source_ts=ts,
                   error="down" if quality is Quality.BAD else None)


def by_tag(readings: list[Reading]) -> dict[str, Any]:
    return {r.tag: r.value for r in readings}


Step = Callable[[int], list[Reading]]


def play(engine: KpiEngine, start: datetime, seconds: int, step: Step,
         every: int = 1) -> None:
    """Observe the machine every `every` seconds from `start`, for `seconds` seconds."""
    for second in range(0, seconds, every):
        engine.observe(step(second), start + timedelta(seconds=second))


def machine_40_of_60(second: int) -> list[Reading]:
    """Runs 40 s of 60 making a part a second, 4 of the 40 rejects (one every 10 parts)."""
    parts = min(second, 40)
    return [reading("running", second < 40), reading("parts", parts),
            reading("rejects", parts // 10)]


def test_hand_computed_shift_minute() -> None:
    engine = make_engine()
    play(engine, EARLY, 61, machine_40_of_60)
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=60)))
    assert figures["oee_run_seconds"] == 40.0
    assert figures["oee_planned_seconds"] == 60.0
    assert figures["oee_unknown_seconds"] == 0.0
    assert (figures["oee_total_count"], figures["oee_reject_count"],
            figures["oee_good_count"]) == (40, 4, 36)
    assert figures["oee_availability"] == pytest.approx(0.667, abs=5e-4)
    assert figures["oee_performance"] == pytest.approx(0.8)
    assert figures["oee_quality"] == pytest.approx(0.9)
    assert figures["oee"] == pytest.approx(0.48)
    assert figures["oee_shift"] == "2026-03-02 early"


def test_figures_are_good_readings_of_the_device_with_the_contract_tags() -> None:
    engine = make_engine()
    play(engine, EARLY, 61, machine_40_of_60)
    now = EARLY + timedelta(seconds=60)
    figures = engine.figures(DEVICE, now)
    assert tuple(r.tag for r in figures) == KPI_TAGS
    assert all(r.device == DEVICE and r.quality is Quality.GOOD and r.source_ts == now
               for r in figures)
    values = by_tag(figures)
    assert all(type(values[t]) is int for t in
               ("oee_total_count", "oee_good_count", "oee_reject_count"))
    assert all(type(values[t]) is float for t in
               ("oee_run_seconds", "oee_planned_seconds", "oee_unknown_seconds"))
    assert {r.tag: r.unit for r in figures}["oee_run_seconds"] == "s"


def test_plc_outage_is_unknown_and_left_out_of_planned_time() -> None:
    engine = make_engine()

    def with_outage(second: int) -> list[Reading]:
        if 20 <= second < 30:
            return [reading(tag, None, Quality.BAD) for tag in ("running", "parts", "rejects")]
        return [reading("running", True), reading("parts", second), reading("rejects", 0)]

    play(engine, EARLY, 61, with_outage)
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=60)))
    assert figures["oee_unknown_seconds"] == 10.0
    assert figures["oee_planned_seconds"] == 50.0
    assert figures["oee_run_seconds"] == 50.0
    assert figures["oee_availability"] == 1.0
    # parts made during the outage are counted at the next good value, from the last good one
    assert figures["oee_total_count"] == 60


def test_gap_longer_than_max_gap_is_unknown_gateway_not_running() -> None:
    engine = make_engine()
    play(engine, EARLY, 11, lambda s: [reading("running", True), reading("parts", s)])
    # nothing is observed for 90 s: the gateway was down (max_gap is 3 x kpi_interval = 30 s)
    engine.observe([reading("running", True), reading("parts", 100)],
                   EARLY + timedelta(seconds=100))
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=100)))
    assert figures["oee_run_seconds"] == 10.0
    assert figures["oee_unknown_seconds"] == 90.0
    assert figures["oee_total_count"] == 100


def test_running_state_not_read_for_longer_than_stale_after_becomes_unknown() -> None:
    engine = make_engine(stale_after=3.0)
    engine.observe([reading("running", True)], EARLY)
    for second in range(1, 21):  # the device's readings stop; only ticks come
        engine.tick(EARLY + timedelta(seconds=second))
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=20)))
    assert figures["oee_run_seconds"] == 3.0
    assert figures["oee_unknown_seconds"] == 17.0


def test_state_of_a_subscribed_tag_holds_until_the_next_change() -> None:
    engine = make_engine(stale_after=None)
    engine.observe([reading("running", True)], EARLY)
    for second in range(10, 601, 10):
        engine.tick(EARLY + timedelta(seconds=second))
    assert by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=600)))[
        "oee_run_seconds"] == 600.0


def test_time_of_the_shift_before_the_first_observation_is_unknown() -> None:
    engine = make_engine()
    start = EARLY + timedelta(hours=1)
    play(engine, start, 61, lambda s: [reading("running", True)])
    figures = by_tag(engine.figures(DEVICE, start + timedelta(seconds=60)))
    assert figures["oee_unknown_seconds"] == 3600.0
    assert figures["oee_run_seconds"] == 60.0


def test_state_codes_in_a_set_mean_running() -> None:
    engine = make_engine(running={"tag": "state", "values": [1, 2]})
    codes = [1, 2, 3, 0, 1]  # 12 s each: running, running, stopped, stopped, running
    play(engine, EARLY, 61, lambda s: [reading("state", codes[min(s // 12, 4)])])
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=60)))
    assert figures["oee_run_seconds"] == 36.0
    assert figures["oee_planned_seconds"] == 60.0


def test_counter_reset_to_zero_mid_shift_counts_from_zero() -> None:
    engine = make_engine()
    values = [*range(0, 101, 10), 0, 5, 7]
    play(engine, EARLY, len(values), lambda s: [reading("running", True),
                                                reading("parts", values[s])])
    assert by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=len(values))))[
        "oee_total_count"] == 107


def test_uint16_wrap_counts_the_parts_across_the_wrap() -> None:
    engine = make_engine()
    values = [65500, 65530, 2, 10]
    play(engine, EARLY, len(values), lambda s: [reading("running", True),
                                                reading("parts", values[s])])
    assert by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=4)))[
        "oee_total_count"] == 30 + 8 + 8


def test_zero_parts_quality_and_performance_have_no_denominator_or_zero() -> None:
    engine = make_engine()
    play(engine, EARLY, 31, lambda s: [reading("running", True), reading("parts", 7),
                                       reading("rejects", 0)])
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=30)))
    assert figures["oee_quality"] is None
    assert figures["oee_performance"] == 0.0
    assert figures["oee_availability"] == 1.0
    assert figures["oee"] == 0.0  # planned time and no good part: OEE 0, not null


def test_no_planned_time_yet_gives_null_ratios() -> None:
    engine = make_engine()
    play(engine, EARLY, 11, lambda s: [reading("running", None, Quality.BAD)])
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=10)))
    assert figures["oee_unknown_seconds"] == 10.0
    assert [figures[t] for t in ("oee", "oee_availability", "oee_performance",
                                 "oee_quality")] == [None, None, None, None]


def test_good_count_instead_of_rejects() -> None:
    engine = make_engine(reject_count=None, good_count="good")
    play(engine, EARLY, 11, lambda s: [reading("running", True), reading("parts", 10 * s),
                                       reading("good", 9 * s)])
    figures = by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=10)))
    assert (figures["oee_total_count"], figures["oee_good_count"],
            figures["oee_reject_count"]) == (100, 90, 10)


def test_shift_change_at_14_splits_the_figures_and_emits_the_final_set() -> None:
    engine = make_engine()
    start = datetime(2026, 3, 2, 13, 59, tzinfo=UTC)
    play(engine, start, 120, lambda s: [reading("running", s < 90),
                                        reading("parts", s), reading("rejects", 0)])
    out = engine.tick(start + timedelta(seconds=120))
    end = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    final = by_tag([r for r in out if r.source_ts == end])
    current = by_tag([r for r in out if r.source_ts != end])
    assert final["oee_shift"] == "2026-03-02 early"
    assert final["oee_run_seconds"] == 60.0
    assert final["oee_unknown_seconds"] == 7 * 3600 + 3540.0
    assert final["oee_total_count"] == 59  # the count read at 14:00:00 is the late shift's
    assert current["oee_shift"] == "2026-03-02 late"
    assert (current["oee_run_seconds"], current["oee_planned_seconds"]) == (30.0, 60.0)
    assert current["oee_total_count"] == 60  # 59 -> 119 counted in the late shift
    assert engine.recent_shifts(DEVICE)[0].shift == "2026-03-02 early"
    assert all(r.source_ts != end for r in engine.tick(start + timedelta(seconds=122)))


def test_night_shift_across_midnight_carries_its_start_date() -> None:
    engine = make_engine()
    start = datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC)
    play(engine, start, 61, lambda s: [reading("running", True)])
    figures = by_tag(engine.figures(DEVICE, start + timedelta(seconds=60)))
    assert figures["oee_shift"] == "2026-03-02 night"
    assert figures["oee_run_seconds"] == 60.0
    assert figures["oee_unknown_seconds"] == 7170.0  # 22:00 to 23:59:30


@pytest.mark.parametrize(("night", "hours"), [
    (datetime(2026, 3, 28, 21, 0, tzinfo=UTC), 7),    # 22:00 CET -> 06:00 CEST
    (datetime(2026, 10, 24, 20, 0, tzinfo=UTC), 9),   # 22:00 CEST -> 06:00 CET
])
def test_night_shift_over_a_dst_change_counts_real_seconds(night: datetime, hours: int) -> None:
    engine = make_engine(timezone="Europe/Berlin")
    play(engine, night, hours * 3600 + 11, lambda s: [reading("running", True)], every=10)
    out = engine.tick(night + timedelta(hours=hours, seconds=20))
    final = by_tag([r for r in out if r.source_ts == night + timedelta(hours=hours)])
    assert final["oee_shift"] == f"{night.date().isoformat()} night"
    assert final["oee_run_seconds"] == hours * 3600.0
    assert final["oee_unknown_seconds"] == 0.0


def test_time_outside_every_shift_accumulates_nothing() -> None:
    engine = make_engine(shifts=[{"name": "early", "start": "06:00", "end": "14:00"}])
    start = datetime(2026, 3, 2, 13, 59, 50, tzinfo=UTC)
    play(engine, start, 600, lambda s: [reading("running", True), reading("parts", s)])
    out = engine.tick(start + timedelta(seconds=600))
    assert {r.source_ts for r in out} == {datetime(2026, 3, 2, 14, 0, tzinfo=UTC)}
    assert by_tag(out)["oee_run_seconds"] == 10.0
    assert engine.figures(DEVICE, start + timedelta(seconds=601)) == []


def test_a_break_is_not_planned_unless_the_machine_runs_through_it() -> None:
    shifts = [{"name": "early", "start": "06:00", "end": "14:00",
               "breaks": [{"start": "06:01", "end": "06:02"}]}]
    stopped = make_engine(shifts=shifts)
    play(stopped, EARLY, 181, lambda s: [reading("running", not 60 <= s < 120)])
    figures = by_tag(stopped.figures(DEVICE, EARLY + timedelta(seconds=180)))
    assert (figures["oee_run_seconds"], figures["oee_planned_seconds"]) == (120.0, 120.0)
    through = make_engine(shifts=shifts)
    play(through, EARLY, 181, lambda s: [reading("running", True)])
    figures = by_tag(through.figures(DEVICE, EARLY + timedelta(seconds=180)))
    assert (figures["oee_run_seconds"], figures["oee_planned_seconds"]) == (180.0, 180.0)


def test_readings_of_other_devices_and_tags_are_ignored() -> None:
    engine = make_engine()
    engine.observe([Reading(device="other", tag="running", value=True, source_ts=EARLY),
                    reading("oil_temperature", 40.0)], EARLY)
    assert by_tag(engine.figures(DEVICE, EARLY + timedelta(seconds=5)))[
        "oee_unknown_seconds"] == 5.0


# -- restart resume ---------------------------------------------------------------------------

def test_restart_mid_shift_resumes_from_the_buffer_database(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    buffer = DurableBuffer(path, ["mqtt"])  # the store shares the buffer's file
    store = KpiStateStore(path)
    first = make_engine()
    play(first, EARLY, 601, lambda s: [reading("running", True), reading("parts", s),
                                       reading("rejects", s // 100)])
    first.tick(EARLY + timedelta(seconds=600))
    assert store.save(first.snapshot())
    store.close()
    buffer.close()

    # the gateway is killed and comes back 20 s later; 20 parts were made meanwhile
    again = KpiStateStore(path)
    second = make_engine(restored=again.load())
    assert second.restore_problems == []
    back = EARLY + timedelta(seconds=620)
    play(second, back, 61, lambda s: [reading("running", True), reading("parts", 620 + s),
                                      reading("rejects", 6)])
    figures = by_tag(second.figures(DEVICE, back + timedelta(seconds=60)))
    assert figures["oee_run_seconds"] == 660.0
    assert figures["oee_unknown_seconds"] == 20.0
    assert figures["oee_total_count"] == 680
    assert figures["oee_reject_count"] == 6
    assert figures["oee_shift"] == "2026-03-02 early"
    again.close()


def test_restart_after_the_shift_ended_emits_its_final_figures(tmp_path: Path) -> None:
    store = KpiStateStore(tmp_path / "buffer.db")
    first = make_engine()
    start = datetime(2026, 3, 2, 13, 58, tzinfo=UTC)
    play(first, start, 111, lambda s: [reading("running", True)])
    store.save(first.snapshot())
    second = make_engine(restored=store.load())
    out = second.tick(datetime(2026, 3, 2, 14, 30, tzinfo=UTC))
    final = by_tag([r for r in out if r.source_ts == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)])
    assert final["oee_shift"] == "2026-03-02 early"
    assert final["oee_run_seconds"] == 110.0
    assert final["oee_unknown_seconds"] == 8 * 3600 - 110.0


def test_saved_state_of_a_shift_no_longer_planned_is_not_resumed(tmp_path: Path) -> None:
    first = make_engine()
    play(first, EARLY, 11, lambda s: [reading("running", True), reading("parts", s)])
    saved = first.snapshot()
    second = make_engine(shifts=[{"name": "day", "start": "07:00", "end": "15:00"}],
                         restored=saved)
    assert "not in the shift plan" in second.restore_problems[0]
    second.observe([reading("running", True), reading("parts", 15)],
                   datetime(2026, 3, 2, 7, 0, tzinfo=UTC))
    # the counter's last good value survives: 10 -> 15 is 5 parts of the new shift
    assert by_tag(second.figures(DEVICE, datetime(2026, 3, 2, 7, 0, tzinfo=UTC)))[
        "oee_total_count"] == 5


def test_damaged_saved_state_is_reported_and_not_resumed() -> None:
    engine = make_engine(restored={DEVICE: {"version": 1, "last": "yesterday"}})
    assert engine.restore_problems and DEVICE in engine.restore_problems[0]


def test_store_never_raises_on_a_disk_error(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    store = KpiStateStore(tmp_path / "missing" / "buffer.db")
    with caplog.at_level(logging.WARNING, logger="gateway.kpi.store"):
        assert store.load() == {}
        assert store.save({DEVICE: {"version": 1}}) is False
        assert store.save({DEVICE: {"version": 1}}) is False
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_store_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    path.write_bytes(b"this is not sqlite" * 100)
    store = KpiStateStore(path)
    assert store.load() == {}
    assert store.save({DEVICE: {}}) is False


def test_store_writes_one_row_per_device_as_json(tmp_path: Path) -> None:
    path = tmp_path / "buffer.db"
    store = KpiStateStore(path)
    assert store.save({"a": {"x": 1}, "b": {"y": [2]}})
    assert store.save({"a": {"x": 3}})
    store.close()
    with sqlite3.connect(path) as db:
        rows = sorted(db.execute("SELECT device, state FROM kpi_state").fetchall())
    assert rows == [("a", '{"x":3}'), ("b", '{"y":[2]}')]


# -- properties -------------------------------------------------------------------------------

counter_steps = st.lists(st.one_of(
    st.tuples(st.just("parts"), st.integers(0, 16384)),
    st.tuples(st.just("reset"), st.integers(0, 1000)),
), max_size=60)


@given(start=st.integers(0, 65535), steps=counter_steps)
def test_uint16_counter_deltas_sum_to_the_parts_made(start: int,
                                                     steps: list[tuple[str, int]]) -> None:
    value, made, counted = start, 0, 0
    for kind, amount in steps:
        if kind == "reset" and not amount < value < 49152:
            # a reset shows only as a fall, and one from the top quarter to the bottom reads
            # as a wrap, by design: the engine cannot tell those apart
            continue
        new = (value + amount) % 65536 if kind == "parts" else amount
        made += amount
        counted += counter_delta(value, new, "uint16")
        value = new
    assert counted == made


@given(previous=st.integers(-(2**15), 2**15 - 1), current=st.integers(-(2**15), 2**15 - 1))
def test_int16_delta_is_never_negative_and_wraps_only_top_to_bottom(previous: int,
                                                                    current: int) -> None:
    delta = counter_delta(previous, current, "int16")
    assert delta >= 0
    if is_wrap(previous, current, "int16"):
        assert previous >= 16384 and current < -16384
        assert delta == (current - previous) % 65536


events = st.lists(st.tuples(
    st.floats(0.0, 50.0),                                       # seconds until this event
    st.sampled_from([True, False, None]),                       # running, stopped, bad
    st.integers(0, 5),                                          # parts made
    st.integers(0, 5),                                          # of which rejects
), max_size=80)


@settings(max_examples=150, deadline=None)
@given(offset=st.floats(0.0, 20 * 3600.0), steps=events)
def test_time_adds_up_and_figures_stay_in_range(offset: float,
                                                steps: list[tuple[float, Any, int, int]]) -> None:
    engine = make_engine(shifts=[{"name": "day", "start": "00:00", "end": "00:00",
                                  "breaks": [{"start": "12:00", "end": "12:30"}]}],
                         stale_after=20.0)
    day = datetime(2026, 3, 2, tzinfo=UTC)
    now, parts, rejects = day + timedelta(seconds=offset), 0, 0
    engine.observe([reading("parts", 0), reading("rejects", 0)], now)
    for wait, running, made, rejected in steps:
        now += timedelta(seconds=wait)
        parts, rejects = parts + made, rejects + min(rejected, made)
        quality = Quality.GOOD if running is not None else Quality.BAD
        engine.observe([reading("running", running, quality), reading("parts", parts % 65536),
                        reading("rejects", rejects % 65536)], now)
    end = now  # at most 20 h + 80 x 50 s: still the same day
    figures = engine.shift_figures(DEVICE, end)
    machine = engine._machines[DEVICE]
    totals = machine.totals
    elapsed = (end - day).total_seconds()
    assert totals.run + totals.stop + totals.unknown + totals.planned_stop == pytest.approx(
        elapsed, abs=1e-6)
    assert figures is not None
    assert figures.planned_seconds == pytest.approx(totals.run + totals.stop, abs=1e-3)
    assert figures.total == parts and figures.good + figures.reject == figures.total
    for ratio in (figures.availability, figures.quality):
        assert ratio is None or 0.0 <= ratio <= 1.0
    assert figures.performance is None or figures.performance >= 0.0
    if None not in (figures.availability, figures.performance, figures.quality):
        product = figures.availability * figures.performance * figures.quality  # type: ignore[operator]
        assert figures.oee == pytest.approx(product, rel=1e-9, abs=1e-12)
        if figures.performance <= 1.0:  # type: ignore[operator]
            assert figures.oee is not None and 0.0 <= figures.oee <= 1.0
