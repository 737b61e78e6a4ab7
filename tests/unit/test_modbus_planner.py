"""The request planner: the fewest reads, checked against a brute force."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.planner import ReadRequest, TagSpan, plan_reads

pytestmark = pytest.mark.unit


def spans(*items: tuple[str, int, int]) -> list[TagSpan]:
    return [TagSpan(name, "holding", address, size) for name, address, size in items]


def test_adjacent_tags_share_one_read() -> None:
    plan = plan_reads(spans(("a", 0, 2), ("b", 2, 2), ("c", 4, 1)))
    assert [(r.start, r.count) for r in plan.requests] == [(0, 5)]


def test_gap_up_to_max_gap_is_read_through() -> None:
    plan = plan_reads(spans(("a", 0, 1), ("b", 11, 1)), max_gap=10)
    assert [(r.start, r.count) for r in plan.requests] == [(0, 12)]
    plan = plan_reads(spans(("a", 0, 1), ("b", 12, 1)), max_gap=10)
    assert [(r.start, r.count) for r in plan.requests] == [(0, 1), (12, 1)]


def test_reads_never_exceed_125_registers_nor_split_a_tag() -> None:
    plan = plan_reads(spans(("a", 0, 2), ("b", 123, 2), ("c", 124, 4)), max_gap=200)
    assert [(r.start, r.count) for r in plan.requests] == [(0, 125), (124, 4)]


def test_device_limit_is_respected() -> None:
    plan = plan_reads(spans(*[(f"t{i}", i, 1) for i in range(100)]), max_registers=16)
    assert len(plan.requests) == 7 and max(r.count for r in plan.requests) == 16


def test_bits_of_one_status_word_share_its_read() -> None:
    plan = plan_reads(spans(("run", 10, 1), ("fault", 10, 1), ("door", 10, 1)))
    assert len(plan.requests) == 1 and plan.requests[0].count == 1


def test_tables_are_planned_separately_and_coils_use_the_bit_cap() -> None:
    tags = [TagSpan(f"c{i}", "coil", i * 100, 1) for i in range(20)]
    tags += [TagSpan("h", "holding", 0, 1), TagSpan("i", "input", 0, 1)]
    plan = plan_reads(tags, max_gap=100)
    assert [r.table for r in plan.requests] == ["holding", "input", "coil"]
    assert plan.requests[2].count == 1901


def test_describe_names_the_tags() -> None:
    plan = plan_reads(spans(("oil", 100, 2), ("pressure", 102, 2)))
    assert plan.describe() == ["holding 100..103 (4 regs): oil, pressure"]


def brute_force_minimum(tags: list[TagSpan], max_gap: int, cap: int) -> int:
    """The fewest reads over every partition into consecutive groups of the address order
    and, independently, every subset choice (exhaustive over small maps)."""
    ordered = sorted(tags, key=lambda t: (t.address, t.end))
    n = len(ordered)

    def feasible(group: tuple[TagSpan, ...]) -> bool:
        start = min(t.address for t in group)
        end = max(t.end for t in group)
        if end - start > cap:
            return False
        covered = sorted(group, key=lambda t: t.address)
        reach = covered[0].end
        for tag in covered[1:]:
            if tag.address - reach > max_gap:
                return False
            reach = max(reach, tag.end)
        return True

    @cache
    def best(remaining: frozenset[int]) -> int:
        if not remaining:
            return 0
        first = min(remaining)  # the lowest tag must be in some read: try every group with it
        others = sorted(remaining - {first})
        result = n + 1
        for mask in range(1 << len(others)):
            group = {first} | {others[i] for i in range(len(others)) if mask >> i & 1}
            if feasible(tuple(ordered[i] for i in sorted(group))):
                result = min(result, 1 + best(remaining - group))
        return result

    return best(frozenset(range(n)))


tag_maps = st.lists(st.tuples(st.integers(0, 60), st.sampled_from([1, 1, 2, 4])),
                    min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(tag_maps, st.integers(0, 6), st.integers(4, 20))
def test_plan_is_optimal_against_brute_force(items: list[tuple[int, int]], max_gap: int,
                                             cap: int) -> None:
    tags = [TagSpan(f"t{i}", "holding", address, size) for i, (address, size) in enumerate(items)]
    plan = plan_reads(tags, max_gap=max_gap, max_registers=cap)
    assert len(plan.requests) == brute_force_minimum(tags, max_gap, cap)
    covered = {span.name for request in plan.requests for span in request.tags}
    assert covered == {t.name for t in tags}
    for request in plan.requests:
        assert request.count <= cap
        for span in request.tags:
            assert request.start <= span.address and span.end <= request.start + request.count


class CountingSpan(TagSpan):
    """A span that counts how often it is hashed."""

    hashed = 0

    def __hash__(self) -> int:
        CountingSpan.hashed += 1
        return super().__hash__()


def test_a_request_hashes_its_tags_once_not_on_every_lookup() -> None:
    spans = tuple(CountingSpan(f"t{n}", "holding", n) for n in range(30))
    request = ReadRequest("holding", 0, 30, spans)
    CountingSpan.hashed = 0
    layout = {request: "layout"}
    for _ in range(10):
        assert layout[request] == "layout"
    assert CountingSpan.hashed == 0


def test_equal_requests_hash_equal_and_find_each_other() -> None:
    first = plan_reads([TagSpan("a", "holding", 0), TagSpan("b", "holding", 5)]).requests[0]
    second = plan_reads([TagSpan("a", "holding", 0), TagSpan("b", "holding", 5)]).requests[0]
    other = plan_reads([TagSpan("a", "holding", 0), TagSpan("b", "holding", 6)]).requests[0]
    assert first == second and hash(first) == hash(second)
    assert {first: 1}[second] == 1
    assert other != first and other not in {first: 1}
    assert "_hash" not in repr(first)
