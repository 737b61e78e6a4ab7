"""The command round-trip bench's smoke (what `bash bench/run --smoke` runs in CI), for real:
simulator, mosquitto and two gateway processes; every command answered once, ok, read back, with
positive latencies, while the loaded gateway really polled. Plus its pure summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.command_roundtrip import Answer, Sent, main, problems, summarise


@pytest.mark.integration
def test_the_smoke_answers_every_command_ok_with_positive_latencies(tmp_path: Path) -> None:
    out = tmp_path / "roundtrip.json"
    assert main(["--smoke", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert problems(results) == []
    assert results["unmatched_answers"] == 0
    for key in ("loaded", "baseline"):
        phase = results[key]
        assert phase["sent"] >= 20, phase
        assert phase["answered"] == phase["ok"] == phase["sent"], phase
        assert phase["refused"] == phase["missing"] == phase["duplicate_answers"] == 0, phase
        assert phase["read_back_mismatches"] == 0, phase
        latencies = [phase[f"latency_{n}_ms"] for n in ("min", "p50", "p99", "max")]
        assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in latencies)
        assert latencies == sorted(latencies), latencies
        # The result's ts (the gateway had the read-back) lies between publish and arrival.
        assert 0 < phase["to_confirmed_p50_ms"] <= phase["latency_max_ms"], phase
        assert phase["result_delivery_p50_ms"] >= 0, phase
    loaded = results["loaded"]
    assert loaded["readings_per_s"] > 0.5 * loaded["tags"] * 1000 / loaded["poll_ms"], loaded
    assert results["ratio_p50_to_baseline"] > 0


def test_summary_counts_missing_duplicate_refused_and_mismatched_answers() -> None:
    sent = {f"c{n}": Sent("dev-0", n, at=10.0 + n) for n in range(5)}
    answers = {"c0": [Answer(True, 0, None, 10.02)],
               "c1": [Answer(True, 1, None, 11.04), Answer(True, 1, None, 11.5)],
               "c2": [Answer(False, None, "dev-0 is down: nothing was written", 12.01)],
               "c3": [Answer(True, 99, None, 13.03)]}
    summary = summarise(list(sent), sent, answers)
    assert (summary["sent"], summary["answered"], summary["ok"], summary["refused"]) == (
        5, 4, 3, 1)
    assert summary["missing_ids"] == ["c4"]
    assert summary["duplicate_answers"] == 1
    assert summary["read_back_mismatches"] == 1
    assert summary["refusals"] == ["dev-0 is down: nothing was written"]
    assert summary["latency_min_ms"] == 10.0 and summary["latency_max_ms"] == 40.0
    assert summary["latency_p50_ms"] == 30.0  # the first answer of each: 20, 40, 10, 30 ms
    assert problems({"loaded": summary, "baseline": {**summary, "missing": 0,
                                                     "duplicate_answers": 0}}) == [
        "loaded: 1 of 5 commands unanswered (c4)", "loaded: 1 duplicate answers"]


def test_summary_splits_a_round_trip_at_the_results_timestamp() -> None:
    sent = {"c0": Sent("dev-0", 7, at=100.0, wall=5000.0)}
    answers = {"c0": [Answer(True, 7, None, at=100.05, confirmed=5000.03)]}
    summary = summarise(["c0"], sent, answers)
    assert summary["latency_p50_ms"] == 50.0
    assert summary["to_confirmed_p50_ms"] == 30.0
    assert summary["result_delivery_p50_ms"] == 20.0


def test_summary_of_nothing_answered_has_no_latencies() -> None:
    sent = {"c0": Sent("dev-0", 1, at=1.0)}
    summary = summarise(["c0"], sent, {})
    assert summary["missing"] == 1 and summary["latency_p99_ms"] is None
