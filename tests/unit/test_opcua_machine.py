"""The simulated CNC: deterministic under a seed, goes through every state, stays in range,
and config/opcua-demo.yaml reads every one of its variables."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from simulators.opcua.address_space import CNC, PIECE, RPM, cnc_values, gateway_tags
from simulators.opcua.machines import ALARM, IDLE, PROGRAMS, RUNNING, STATES, Cnc

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def run(seed: int, ticks: int) -> list[dict[str, Any]]:
    machine = Cnc(seed)
    out = []
    for _ in range(ticks):
        machine.step()
        out.append(cnc_values(machine))
    return out


def test_same_seed_same_values_other_seed_other_values() -> None:
    assert run(7, 300) == run(7, 300)
    assert run(7, 300) != run(8, 300)


def test_a_long_run_goes_through_every_state_and_program() -> None:
    values = run(1, 2000)
    assert {v["Cnc.State"] for v in values} == set(STATES)
    assert {v["Cnc.Program"] for v in values} == set(PROGRAMS)


def test_alarm_text_is_set_exactly_while_in_alarm() -> None:
    for v in run(2, 2000):
        assert bool(v["Cnc.Alarm"]) == (v["Cnc.State"] == ALARM), v


def test_spindle_turns_and_parts_count_only_while_running() -> None:
    values = run(3, 2000)
    for before, after in itertools.pairwise(values):
        running = after["Cnc.State"] == RUNNING
        assert (after["Cnc.SpindleSpeed"] > 0) == running
        assert after["Cnc.PartCounter"] == before["Cnc.PartCounter"] + running
    assert any(v["Cnc.State"] == IDLE and v["Cnc.FeedRate"] == 0 for v in values)


def test_every_value_stays_within_its_eu_range() -> None:
    ranges = {v.name: v.range for v in CNC if v.range is not None}
    assert len(ranges) == 6  # speed, load, feed and the three positions
    for values in run(4, 2000):
        for name, (low, high) in ranges.items():
            assert low <= values[name] <= high, (name, values[name])


def test_unit_ids_pack_the_unece_code_as_part_8_says() -> None:
    assert RPM.unit_id == (ord("M") << 16) | (ord("4") << 8) | ord("6")
    assert PIECE.information().DisplayName.Text == "pcs"
    assert {v.name for v in CNC} == set(cnc_values(Cnc(0)))


def test_opcua_demo_config_is_valid_and_has_every_tag_of_the_simulator() -> None:
    config = load_config(str(ROOT / "config" / "opcua-demo.yaml"))
    [device] = config.devices
    tags = [t.model_dump(include={"name", "node", "unit", "writable", "min", "max"},
                         exclude_defaults=True)
            for t in device.tags]  # type: ignore[attr-defined]
    assert tags == gateway_tags()
