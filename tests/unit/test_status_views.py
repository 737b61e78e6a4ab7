"""What the status page reads: the bounded ring of recent values per tag, the KPI stage's
current figures, shift trend and last shifts as plain dicts, enum texts and sparkline points
from the status server (over its methods; the browser test covers the page itself)."""

from __future__ import annotations

import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.http_server import StatusServer
from gateway.kpi.config import KpiSettings, OeeConfig
from gateway.kpi.engine import KpiEngine, MachineKpi
from gateway.kpi.stage import TREND_POINTS, KpiStage
from gateway.models import Quality, Reading, bad_reading, good_reading
from gateway.state import RECENT_POINTS, RECENT_SPACING, GatewayState, TagState

pytestmark = pytest.mark.unit
START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
SHIFTS = [{"name": "early", "start": "06:00", "end": "14:00"},
          {"name": "late", "start": "14:00", "end": "22:00"}]


def test_ring_keeps_the_last_numeric_values_of_each_tag_only() -> None:
    tags = TagState()
    for second in range(RECENT_POINTS + 15):
        ts = START + timedelta(seconds=second)
        tags.update([good_reading("d", "n", second * 1.5, ts), good_reading("d", "b", True, ts),
                     good_reading("d", "s", "text", ts)])
    points = tags.history("d", "n")
    assert len(points) == RECENT_POINTS
    assert points[0] == (START + timedelta(seconds=15), 22.5) and points[-1][1] == 111.0
    assert len(tags.history("d", "b")) == RECENT_POINTS
    assert tags.history("d", "s") == [] and tags.latest[("d", "s")].value == "text"
    tags.forget("d")
    assert tags.history("d", "n") == [] and not tags.latest


@given(st.lists(st.one_of(st.integers(-2**63, 2**64), st.floats(allow_nan=False),
                          st.booleans()), max_size=3 * RECENT_POINTS))
def test_the_last_points_are_kept_in_order_whatever_the_count(values: list[float]) -> None:
    tags = TagState()
    for n, value in enumerate(values):
        tags.update([good_reading("d", "n", value, START + timedelta(seconds=n))])
    kept = values[-RECENT_POINTS:]
    points = tags.points("d", "n")
    assert [v for _, v in points] == [float(v) for v in kept]
    assert [t for t, _ in points] == [
        (START + timedelta(seconds=n)).timestamp()
        for n in range(len(values) - len(kept), len(values))]


def test_a_fast_poll_gets_a_point_every_spacing_and_its_latest_every_reading() -> None:
    """Every 100 ms for 10 s: a point each RECENT_SPACING of source time, so the 60 points
    span 30 s rather than 6; an older time than the last point's is a point again."""
    tags = TagState()
    step = 0.1
    for n in range(100):
        tags.update([good_reading("d", "n", n, START + timedelta(seconds=n * step))])
        assert tags.latest[("d", "n")].value == n
    values = [v for _, v in tags.points("d", "n")]
    every = round(RECENT_SPACING / step)
    assert values == [float(n) for n in range(0, 100, every)]
    tags.update([good_reading("d", "n", -1, START)])
    assert tags.points("d", "n")[-1] == (START.timestamp(), -1.0)


def test_an_int_past_a_float_gets_no_point_but_is_still_the_latest() -> None:
    tags = TagState()
    tags.update([good_reading("d", "n", 1, START), good_reading("d", "n", 2**1100, START)])
    assert tags.points("d", "n") == [(START.timestamp(), 1.0)]
    assert tags.latest[("d", "n")].value == 2**1100


def test_a_full_sparkline_costs_under_1100_bytes_a_tag() -> None:
    """The deque of (datetime, value) tuples it replaced cost 6.2 KB a tag (62 MB at 10,000
    tags, the whole memory target), the array cut back every 16 points about 1.4 KB, the
    ring of (epoch, value) doubles 1.14 KB (with its key and name, as here)."""
    tags = TagState()
    tracemalloc.start()
    try:
        for second in range(3 * RECENT_POINTS):
            ts = START + timedelta(seconds=second)
            tags.update([good_reading("d", f"t{i}", second + i * 0.5, ts) for i in range(1000)])
        tags.latest.clear()  # what is measured is the sparklines alone
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / 1000 < 1100, f"{held / 1000:.0f} bytes a tag"


def test_the_latest_readings_cost_under_250_bytes_a_tag_and_read_back_equal() -> None:
    """Holding each tag's latest `Reading` cost about 360 bytes a tag besides its key."""
    tags, ts = TagState(), START
    tracemalloc.start()
    try:
        for second in range(3):
            ts = START + timedelta(seconds=second)
            tags.update([good_reading("d", f"t{i}", second + i * 0.5, ts) for i in range(1000)])
        tags.recent.clear()  # what is measured is the latest values alone
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / 1000 < 250, f"{held / 1000:.0f} bytes a tag"
    assert tags.latest[("d", "t3")] == good_reading("d", "t3", 3.5, ts)


def test_a_latest_reading_reads_back_as_it_was_given() -> None:
    given_readings = [good_reading("d", "n", 7, START, unit="bar"),
                      bad_reading("d", "b", "timeout", unit="mm", ts=START),
                      Reading(device="d", tag="u", value=None, quality=Quality.UNCERTAIN,
                              source_ts=START, error="stale"),
                      Reading(device="d", tag="a", value=[1, 2.5, None], source_ts=START)]
    tags = TagState()
    tags.update(given_readings)
    for reading in given_readings:
        kept = tags.latest[(reading.device, reading.tag)]
        assert kept == reading and kept.model_fields_set == reading.model_fields_set
    assert set(tags.latest) == {("d", "n"), ("d", "b"), ("d", "u"), ("d", "a")}
    assert len(tags.latest) == 4 and ("d", "x") not in tags.latest
    assert tags.latest.get(("d", "x")) is None


def test_sparkline_times_stay_right_across_hours_and_out_of_order_times() -> None:
    """The ring keeps times as float32 seconds from a base that follows the newest time."""
    offsets = [0.0, 1800.123, 3700.456, 3600.001, 7400.789, 11_000.25, 90_000.5, 90_001.75]
    tags = TagState()
    for n, offset in enumerate(offsets):
        tags.update([good_reading("d", "n", n, START + timedelta(seconds=offset))])
    points = tags.points("d", "n")
    assert [v for _, v in points] == [float(n) for n in range(len(offsets))]
    newest = START.timestamp() + offsets[-1]
    for (t, _), offset in zip(points, offsets, strict=True):
        expected = START.timestamp() + offset
        age = newest - expected
        tolerance = 0.001 if age <= 7200 else 0.25 * age / (30 * 86400) + 0.001
        assert abs(t - expected) <= tolerance, (offset, t - expected)


def stage(tmp_path: Path) -> KpiStage:
    kpi = KpiSettings(shifts=SHIFTS, kpi_interval="10s")
    stage = KpiStage(kpi, [], tmp_path / "kpi.db")
    oee = OeeConfig(running={"tag": "running"}, total_count="parts", reject_count="rejects",
                    ideal_cycle_time="1s")
    stage.engine = KpiEngine(kpi, [MachineKpi("press", oee, {"parts": "uint16",
                                                             "rejects": "uint16"})])
    return stage


def feed(stage: KpiStage, ts: datetime, running: bool, parts: int) -> None:
    stage.engine.observe([good_reading("press", "running", running, ts),
                          good_reading("press", "parts", parts, ts),
                          good_reading("press", "rejects", parts // 10, ts)], ts)


def test_stage_gives_current_figures_the_shift_trend_and_the_last_shifts(
        tmp_path: Path) -> None:
    views = stage(tmp_path)
    assert views.current("press") is None and views.history("press") == []
    begin = START.replace(hour=13, minute=58)
    for second in range(0, 240, 10):  # across the 14:00 change, running 6 of every 10 s
        ts = begin + timedelta(seconds=second)
        feed(views, ts, True, second // 2)
        feed(views, ts + timedelta(seconds=6), False, second // 2 + 3)
        views.tick(ts + timedelta(seconds=9))
    current = views.current("press")
    assert current is not None and current["shift"] == "2026-03-02 late"
    assert current["availability"] == pytest.approx(0.6, abs=0.01)
    trend = views.history("press")
    assert len(trend) == 12, "the trend restarts with the new shift"
    assert set(trend[0]) == {"ts", "oee", "availability", "performance", "quality"}
    [early] = views.recent("press")
    assert early["shift"] == "2026-03-02 early" and early["total"] == 58  # 0 -> 58
    assert early["availability"] == pytest.approx(0.6, abs=0.01)
    json.dumps([current, trend, early])  # plain data for /api/status
    views.store.close()


def test_trend_stays_bounded_and_still_spans_the_shift(tmp_path: Path) -> None:
    views = stage(tmp_path)
    begin = START + timedelta(hours=1)
    for n in range(TREND_POINTS + 100):
        ts = begin + timedelta(seconds=10 * n)
        feed(views, ts, True, n)
        views.tick(ts)
    trend = views.history("press")
    assert len(trend) <= TREND_POINTS
    assert trend[0]["ts"].startswith("2026-03-02T07:00:00")
    views.store.close()


CONFIG = """
gateway: {id: views, http: {enabled: false}, buffer: {path: %s}}
sinks: {mqtt: {url: "mqtt://127.0.0.1:1"}}
devices:
  - name: moulding
    driver: modbus
    connection: {host: 127.0.0.1, port: 5020}
    tags:
      - {name: state, table: input, address: 0, type: uint16, enum: {2: injecting, 3: holding}}
      - {name: temperature, table: holding, address: 1, type: int16}
"""


def test_tags_carry_the_enum_text_and_recent_gives_sparkline_points(tmp_path: Path) -> None:
    state = GatewayState(parse_config(CONFIG % (tmp_path / "b.db"), env={}), [])
    server = StatusServer(state, "127.0.0.1:0")
    for second in range(3):
        ts = START + timedelta(seconds=second)
        state.tags.update([good_reading("moulding", "state", 2 + second % 2, ts),
                           good_reading("moulding", "temperature", 20 + second, ts),
                           good_reading("moulding", "odd", float("nan"), ts)])
    rows = {r["tag"]: r for r in server.tags()}
    assert rows["state"]["text"] == "injecting" and rows["state"]["value"] == 2
    assert rows["temperature"]["text"] is None
    temperature, odd, missing = server.recent([("moulding", "temperature"), ("moulding", "odd"),
                                               ("moulding", "none")])
    assert temperature["v"] == [20.0, 21.0, 22.0]
    assert temperature["t"][1] - temperature["t"][0] == pytest.approx(1.0)
    assert odd["v"] == [] and missing["v"] == [], "no NaN in JSON, no error for an unknown tag"
