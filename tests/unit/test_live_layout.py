"""The live view's pure layout: names shortened from the middle and still distinct, bad rows
first, pages, summary lines that fit, keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.live_layout import (
    TagRow,
    ViewState,
    distinct_names,
    pack,
    paginate,
    plan_columns,
    select_rows,
    shorten_middle,
)

pytestmark = pytest.mark.unit


def row(device: str, tag: str, quality: str = "good") -> TagRow:
    return TagRow(device, tag, "1", "", quality, "00:00:00.000")


def test_a_name_is_shortened_in_the_middle() -> None:
    assert shorten_middle("barrel_zone_1_temperature", 11) == "barre…ature"
    assert shorten_middle("short", 11) == "short"
    assert len(shorten_middle("x" * 50, 7)) == 7


def test_names_that_differ_in_the_middle_stay_apart() -> None:
    names = ["barrel_zone_1_temperature", "barrel_zone_2_temperature",
             "barrel_zone_3_temperature"]
    short = distinct_names(names, 12)
    assert len(set(short.values())) == 3
    assert all(len(s) <= 12 for s in short.values())
    assert {s[-1] for s in short.values()} != {"…"}  # not three bare prefixes


def test_names_that_differ_only_at_their_end_stay_apart() -> None:
    short = distinct_names(["barrel_zone_temperature_a", "barrel_zone_temperature_b"], 10)
    assert short["barrel_zone_temperature_a"] != short["barrel_zone_temperature_b"]


@given(st.lists(st.text(alphabet="ab_1", min_size=1, max_size=30), max_size=40),
       st.integers(min_value=6, max_value=30))
def test_distinct_names_are_distinct_and_fit(names: list[str], width: int) -> None:
    short = distinct_names(names, width)
    assert set(short) == set(names)
    assert len(set(short.values())) == len(set(names))
    assert all(len(s) <= width for s in short.values())
    assert all(s == n for n, s in short.items() if len(n) <= width and "~" not in s)


def test_bad_rows_come_first_then_uncertain() -> None:
    rows = [row("a", "x"), row("b", "y", "bad"), row("a", "z", "uncertain"), row("c", "w", "bad")]
    ordered = select_rows(rows, ViewState())
    assert [r.quality for r in ordered] == ["bad", "bad", "uncertain", "good"]
    assert [r.device for r in ordered[:2]] == ["b", "c"]


def test_filters_keep_one_device_or_only_bad_rows() -> None:
    rows = [row("a", "x"), row("b", "y", "bad"), row("a", "z", "bad")]
    assert select_rows(rows, ViewState(device="a")) == [row("a", "z", "bad"), row("a", "x")]
    assert [r.tag for r in select_rows(rows, ViewState(bad_only=True))] == ["z", "y"]


def test_keys_page_filter_and_cycle_devices() -> None:
    state = ViewState(devices=["a", "b"])
    assert state.key("n") and state.page == 1
    assert state.key("p") and state.key("p") and state.page == 0
    assert state.key("d") and state.device == "a"
    assert state.key("d") and state.device == "b"
    assert state.key("d") and state.device is None
    assert state.key("b") and state.bad_only
    assert state.key("a") and not state.bad_only
    assert not state.key("x")


@given(st.integers(0, 200), st.integers(1, 30), st.integers(-5, 50))
def test_pages_cover_every_row_once_and_clamp(count: int, per_page: int, page: int) -> None:
    rows = [row("d", f"t{i}") for i in range(count)]
    shown = paginate(rows, per_page, page)
    assert 0 <= shown.number < shown.count
    assert len(shown.rows) <= per_page
    every = [r for n in range(shown.count) for r in paginate(rows, per_page, n).rows]
    assert every == rows


@given(st.lists(st.text(min_size=1, max_size=120), max_size=8), st.integers(20, 200))
def test_packed_lines_fit_and_keep_every_part(parts: list[str], width: int) -> None:
    lines = pack(parts, width)
    assert all(len(line) <= width for line in lines)
    joined = " · ".join(lines)
    assert all(p in joined or len(p) > width for p in parts)


@pytest.mark.parametrize("width", [40, 60, 80, 120, 200])
def test_columns_fit_the_terminal(width: int) -> None:
    rows = [row("moulding-02", "barrel_zone_1_temperature")]
    columns = plan_columns(width, rows)
    used = (columns.device + columns.tag + columns.value + columns.unit + columns.quality
            + columns.time + sum(1 for w in (columns.unit, columns.time) if w) + 3)
    assert used <= width or width < 50
    assert columns.time == (12 if width >= 72 else 0)
