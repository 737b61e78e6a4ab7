"""The bench harness's saturated scenario: sized from the run's own paho ceiling, judged
against it."""

from __future__ import annotations

from typing import Any

import pytest

from bench.harness import Scenario, saturate, scenarios, verdict

pytestmark = pytest.mark.unit


def saturated() -> Scenario:
    return next(s for s in scenarios(smoke=False) if s.key == "i")


def test_the_saturated_scenario_offers_at_least_twice_the_ceiling() -> None:
    scenario = saturated()
    saturate(scenario, 17_300)
    offered = scenario.devices * scenario.tags / scenario.poll
    assert scenario.devices == 14  # 34,600 / 2,500 a device, rounded up
    assert 2 * 17_300 <= offered < 2 * 17_300 + 2_500
    assert "35,000/s offered" in scenario.title


def test_a_scenario_without_the_ratio_keeps_its_devices() -> None:
    scenario = next(s for s in scenarios(smoke=False) if s.key == "b")
    saturate(scenario, 17_300)
    assert scenario.devices == 6


def result(ratio: float, rss_start: float, rss_end: float) -> dict[str, Any]:
    return {"ratio_to_paho_qos1": ratio, "rss_start_mib": rss_start, "rss_mib": rss_end,
            "tags": 3_500, "poll_ms": 100, "produced_per_s": 19_000, "poll_overruns": 2_800,
            "backlog_per_s": 16}


def test_saturated_is_met_at_the_ceiling_with_flat_memory() -> None:
    figure, outcome = verdict("i", result(1.02, 60.0, 62.0))
    assert outcome == "met"
    assert figure.startswith("1.02 of paho (19,000/s polled of 35,000 offered, 2,800 poll slots "
                             "skipped), RSS 60.0 -> 62.0 MiB, backlog +16/s")


@pytest.mark.parametrize(("ratio", "rss_end", "missed"), [
    (0.9, 62.0, "ratio -10%"), (1.1, 80.0, "growth +20.0 MiB")])
def test_saturated_is_missed_below_the_ceiling_or_with_growing_memory(
        ratio: float, rss_end: float, missed: str) -> None:
    _, outcome = verdict("i", result(ratio, 60.0, rss_end))
    assert outcome == f"missed: {missed}"


def twice_a(rate: int, cores: float, rss: float) -> dict[str, Any]:
    return {"readings_per_s": rate, "cores": cores, "peak_rss_mib": rss}


def test_twice_a_is_judged_against_twice_the_rate() -> None:
    scenario = next(s for s in scenarios(smoke=False) if s.key == "j")
    assert scenario.devices * scenario.tags / scenario.poll == 200_000
    assert scenario.influx and scenario.payload == "device"
    assert verdict("j", twice_a(200_000, 0.9, 120.0))[1] == "met"
    assert verdict("j", twice_a(150_000, 0.9, 120.0))[1] == "missed: rate -25%"
    assert verdict("a", twice_a(150_000, 0.9, 120.0))[1] == "met"


def test_a_rate_target_equal_to_the_offered_rate_allows_one_percent() -> None:
    """a and s offer exactly 100,000/s, j 200,000: keeping up with 99% of it meets the
    target, less does not."""
    assert verdict("a", twice_a(99_100, 0.9, 120.0))[1] == "met"
    assert verdict("a", twice_a(98_900, 0.9, 120.0))[1] == "missed: rate -1%"
    assert verdict("j", twice_a(198_100, 0.9, 120.0))[1] == "met"
    assert verdict("s", {"readings_per_s": 99_100, "cores": 0.9})[1] == "met"
    assert verdict("s", {"readings_per_s": 98_000, "cores": 0.9})[1] == "missed: rate -2%"
