"""The machine models follow what clients write to their setpoints: counters at the written
rate and never backwards, a barrel temperature approaching its setpoint first-order, and at the
start values exactly the seeded models."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.modbus.machines import (
    BARREL_SETPOINT,
    MODELS,
    RATE_SETPOINTS,
    SETPOINTS,
    Machine,
    load_machines,
)
from simulators.modbus.server import _Unit

pytestmark = pytest.mark.unit
MACHINES = {m.kind: m for m in load_machines()}
SEED = 3
steps = st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 120)), min_size=1, max_size=40)


def fresh(kind: str) -> Machine:
    return copy.deepcopy(MACHINES[kind])


@pytest.mark.parametrize("kind", sorted(RATE_SETPOINTS))
@given(start=st.floats(0.0, 20_000.0), steps=steps)
def test_counters_never_go_backwards_whatever_rate_is_written(
        kind: str, start: float, steps: list[tuple[float, int]]) -> None:
    machine, rated, t = fresh(kind), RATE_SETPOINTS[kind], start
    before = machine.update(t, 0, SEED)
    for dt, rate in steps:
        machine.setpoints[rated.tag] = rate
        t += dt
        after = machine.update(t, 0, SEED)
        for name in rated.counters:
            assert after[name] >= before[name], (name, t, rate)
        before = after


@pytest.mark.parametrize("kind", sorted(MODELS))
@given(times=st.lists(st.floats(0.0, 86_400.0), min_size=1, max_size=20))
def test_at_the_start_setpoints_a_machine_is_its_seeded_model(kind: str,
                                                              times: list[float]) -> None:
    machine = fresh(kind)
    for t in sorted(times):
        assert machine.update(t, 7, SEED) == {**MODELS[kind](t, 7, SEED, machine.name),
                                              **SETPOINTS[kind]}


@given(target=st.floats(180.0, 280.0), dts=st.lists(st.floats(0.0, 10.0), min_size=1,
                                                     max_size=30))
def test_barrel_approaches_its_setpoint_first_order_without_overshoot(
        target: float, dts: list[float]) -> None:
    machine, t = fresh("injection_moulding"), 100.0
    machine.update(t, 0, SEED)
    machine.setpoints["barrel_setpoint"] = target
    gap = abs(target - BARREL_SETPOINT)
    for dt in dts:
        t += dt
        machine.update(t, 0, SEED)
        remaining = abs(target - machine.barrel)
        assert remaining <= gap + 1e-9  # closer every step, never past the setpoint
        assert min(BARREL_SETPOINT, target) - 1e-9 <= machine.barrel <= max(
            BARREL_SETPOINT, target) + 1e-9
        gap = remaining


def test_barrel_zones_move_with_the_setpoint_by_one_time_constant() -> None:
    machine = fresh("injection_moulding")
    machine.update(100.0, 0, SEED)
    machine.setpoints["barrel_setpoint"] = 265.0
    for step in range(1, 151):
        values = machine.update(100.0 + step * 0.1, 0, SEED)  # the simulator's 0.1 s tick
    model = MODELS["injection_moulding"](115.0, 0, SEED, machine.name)
    # 15 s = one time constant: 1 - 1/e of the 20 degC step.
    assert values["barrel_zone_3"] - model["barrel_zone_3"] == pytest.approx(12.64, abs=0.02)
    assert values["barrel_zone_1"] - model["barrel_zone_1"] == pytest.approx(12.64, abs=0.02)


def test_a_scaled_setpoint_register_is_taken_in_engineering_units() -> None:
    unit = _Unit(fresh("injection_moulding"))
    unit.store(unit.machine.update(0.0, 0, SEED))
    assert unit.tables["holding"][14] == 2450  # 245.0 degC at 0.1 degC per count
    unit.tables["holding"][14] = 2600  # what a client's function 6 leaves there
    unit.take_setpoints()
    assert unit.machine.setpoints == {"barrel_setpoint": pytest.approx(260.0)}
