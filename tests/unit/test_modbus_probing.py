"""Probe planning (pure): the range scan against simulated register maps, and the order
ranking against values encoded in every order."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.modbus.codec import encode_value
from drivers.modbus.probing import (
    ORDERS,
    Block,
    Outcome,
    ScanResult,
    decided,
    parse_span,
    rank_orders,
    scan_ranges,
)

pytestmark = pytest.mark.unit


def run_scan(existing: set[int], start: int, end: int, *, limit: int = 125,
             stride: int = 64) -> tuple[ScanResult, list[Block]]:
    """Drive the scan against a device whose reads answer exception 2 when any address is
    missing and exception 3 past `limit` registers."""
    asked: list[Block] = []
    scan = scan_ranges(start, end, stride=stride)
    try:
        block = next(scan)
        while True:
            asked.append(block)
            assert start <= block.start and block.end <= end and block.count >= 1
            if block.count > limit:
                outcome = Outcome.TOO_LONG
            elif all(a in existing for a in range(block.start, block.end)):
                outcome = Outcome.OK
            else:
                outcome = Outcome.MISSING
            block = scan.send(outcome)
    except StopIteration as stop:
        return stop.value, asked


def as_ranges(existing: set[int], start: int, end: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for a in sorted(x for x in existing if start <= x < end):
        if ranges and ranges[-1][1] == a - 1:
            ranges[-1] = (ranges[-1][0], a)
        else:
            ranges.append((a, a))
    return ranges


def test_the_simulators_map_is_found_in_few_reads() -> None:
    result, asked = run_scan(set(range(256)), 0, 10000)
    assert result.ranges == [(0, 255)]
    assert len(asked) < 175  # 2 blocks, ~7 to find the edge, ~152 strides of 64 over the gap


def test_three_ranges_with_gaps() -> None:
    existing = set(range(0, 10)) | set(range(100, 350)) | set(range(1000, 1125))
    result, asked = run_scan(existing, 0, 2000)
    assert result.ranges == [(0, 9), (100, 349), (1000, 1124)]
    assert len(asked) < 100


def test_a_device_that_takes_shorter_reads_halves_the_block() -> None:
    result, _ = run_scan(set(range(200)), 0, 200, limit=40)
    assert result.ranges == [(0, 199)] and result.block <= 40


intervals = st.lists(st.tuples(st.integers(0, 3000), st.integers(64, 400)), max_size=4)


@given(intervals)
def test_ranges_longer_than_the_stride_are_found_exactly(spans: list[tuple[int, int]]) -> None:
    existing = {a for first, length in spans for a in range(first, first + length)}
    result, asked = run_scan(existing, 0, 4000)
    assert result.ranges == as_ranges(existing, 0, 4000)
    # Bounded: blocks over what exists, two bisections per range, strides over the gaps.
    assert len(asked) <= 4000 // 64 + 4000 // 125 + len(spans) * 20 + 20


@given(st.sets(st.integers(0, 600), max_size=300), st.integers(1, 64))
def test_whatever_the_map_every_address_reported_exists(existing: set[int],
                                                        stride: int) -> None:
    result, asked = run_scan(existing, 0, 600, stride=stride)
    reported = {a for first, last in result.ranges for a in range(first, last + 1)}
    assert reported <= existing
    assert len(asked) <= 2 * 600  # never more than two reads an address


def test_an_unsupported_table_stops_at_once() -> None:
    scan = scan_ranges(0, 10000)
    assert next(scan) == Block(0, 125)
    with pytest.raises(StopIteration) as stop:
        scan.send(Outcome.UNSUPPORTED)
    assert stop.value.value.unsupported and stop.value.value.ranges == []


def test_spans_parse_and_refuse_nonsense() -> None:
    assert parse_span("1-247", 0, 255, "--units") == (1, 247)
    assert parse_span("5", 0, 255, "--units") == (5, 5)
    for bad in ("x", "9-3", "0-300", "1-"):
        with pytest.raises(ValueError, match="--units"):
            parse_span(bad, 0, 255, "--units")


# --- order ranking ------------------------------------------------------------------------


def reads(values: list[float], data_type: str, order: tuple[str, str]) -> list[list[int]]:
    return [encode_value(v, data_type, order[0], order[1]) for v in values]  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ORDERS)
def test_a_temperature_is_read_in_its_own_order(order: tuple[str, str]) -> None:
    scores = rank_orders(reads([21.5, 21.53, 21.61], "float32", order), "float32")
    assert scores[0].order == order and decided(scores)
    assert scores[0].problems == ()


@given(st.floats(0.01, 1e6), st.sampled_from(ORDERS), st.sampled_from(["float32", "float64"]))
def test_everyday_floats_read_plausibly(value: float, order: tuple[str, str],
                                        data_type: str) -> None:
    samples = reads([value, value * 1.001, value * 1.002], data_type, order)
    scores = rank_orders(samples, data_type)  # type: ignore[arg-type]
    best, truth = scores[0], next(s for s in scores if s.order == order)
    assert truth.problems == () and best.problems == ()
    # Arbitrary digits can be ambiguous (a byte swap leaves 1512.0's 0x44BD 0x0000 a plausible
    # -0.0479): the truth is then plausible, and PLC decimals (below) rank first.


@given(st.integers(1, 9999), st.integers(1, 99), st.sampled_from(ORDERS))
@example(1592, 1, ("big", "big"))  # its byte swap has fewer digits (-50258.0)
def test_plc_decimals_rank_their_order_first(whole: int, hundredths: int,
                                             order: tuple[str, str]) -> None:
    value = whole + hundredths / 100
    samples = reads([value, value + 0.01, value + 0.02], "float32", order)
    scores = rank_orders(samples, "float32")
    truth = next(s for s in scores if s.order == order)
    assert scores[0].values == truth.values


@given(st.integers(1, 60000), st.sampled_from(ORDERS))
def test_counters_rank_their_order_first(count: int, order: tuple[str, str]) -> None:
    scores = rank_orders(reads([count, count + 1, count + 2], "uint32", order), "uint32")
    truth = next(s for s in scores if s.order == order)
    assert scores[0].values == truth.values and decided(scores)


def test_an_integer_that_does_not_move_is_undecided() -> None:
    assert not decided(rank_orders(reads([8722] * 3, "uint32", ("big", "big")), "uint32"))


def test_min_and_max_rule_out_an_order() -> None:
    samples = reads([5.0, 5.0, 5.0], "float32", ("big", "big"))
    scores = rank_orders(samples, "float32", low=0, high=100)
    assert scores[0].order == ("big", "big")
    assert all("denormal" in " ".join(s.problems) or s.problems for s in scores[1:])


def test_zero_reads_the_same_in_every_order_and_is_undecided() -> None:
    scores = rank_orders([[0, 0], [0, 0]], "float32")
    assert not decided(scores)


def test_nan_is_never_plausible() -> None:
    nan = [0x7FC0, 0x0000]
    scores = rank_orders([nan, nan], "float32")
    big = next(s for s in scores if s.order == ("big", "big"))
    assert "not a number" in big.problems and math.isnan(big.values[0])
