"""Machine models (pure, deterministic under a seed): engineering values as a function of the
simulated time. The register layout comes from register_map.yaml; these only say what the
values are."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import yaml

from simulators.modbus.schedule import FAULT, STOPPED, Schedule, seeded_schedule

Values = dict[str, Any]
PRESS_CYCLE_TIME = 2.2  # s per stroke: the press config's ideal 2 s gives a performance of 0.91
PACKER_CYCLE_TIME = 1.1  # s per pack, against an ideal of 1 s


def register_map() -> list[dict[str, Any]]:
    """The machines of register_map.yaml, each with unit_id, name, area, line and tags."""
    text = files("simulators.modbus").joinpath("register_map.yaml").read_text()
    return list(yaml.safe_load(text)["machines"])


def _noise(seed: int, name: str, tick: int) -> random.Random:
    # A fresh generator per tick: the values at a tick never depend on what was asked before.
    return random.Random(f"{seed}:{name}:{tick}")


def stamping_press(t: float, tick: int, seed: int, name: str,
                   schedule: Schedule | None = None) -> Values:
    rng = _noise(seed, name, tick)
    moment = (schedule or seeded_schedule(seed, name, PRESS_CYCLE_TIME)).at(t)
    running, fault = moment.running, moment.state == FAULT
    door_open = moment.state == STOPPED and moment.reason == 2  # opened for a changeover
    status = (1 if running else 0) | (2 if fault else 0) | (8 if door_open else 0)
    return {
        "status_word": status, "running": running, "fault": fault, "door_open": door_open,
        "stop_reason": moment.reason,
        "cycle_counter": moment.parts % 2**32, "reject_counter": moment.rejects % 2**16,
        "oil_temperature": round(42.0 + 6.0 * math.sin(t / 300.0) + rng.uniform(-0.2, 0.2), 2),
        "hydraulic_pressure": round((180.0 if running else 20.0) + rng.uniform(-1.5, 1.5), 2),
        "motor_current": round((12.5 if running else 0.8) + rng.uniform(-0.3, 0.3), 2),
        "strokes_per_minute": round(60 / PRESS_CYCLE_TIME) if running else 0,
    }


def injection_moulding(t: float, tick: int, seed: int, name: str,
                       schedule: Schedule | None = None) -> Values:
    rng = _noise(seed, name, tick)
    cycle_time = 24.5
    shots = int(t // cycle_time)
    phase = (t % cycle_time) / cycle_time
    return {
        "state": 2 if phase < 0.3 else (3 if phase < 0.8 else 4),  # inject, hold, cool
        "barrel_zone_1": round(220.0 + rng.uniform(-0.8, 0.8), 2),
        "barrel_zone_2": round(235.0 + rng.uniform(-0.8, 0.8), 2),
        "barrel_zone_3": round(245.0 + rng.uniform(-0.8, 0.8), 2),
        "injection_pressure": round(850.0 * math.exp(-3 * phase) + rng.uniform(0, 5), 1),
        "cycle_time": cycle_time,
        "shot_counter": shots,
        "mould_id": 4711 - 5000,  # a negative id, as some PLCs store them
        "recipe": f"PP-{17 + seed % 5}-BLK",
        "energy_total": int(1_200_000_000 + t * 2_750),
        "ambient_offset": -1250 + int(t) % 50,
    }


def packaging_line(t: float, tick: int, seed: int, name: str,
                   schedule: Schedule | None = None) -> Values:
    rng = _noise(seed, name, tick)
    moment = (schedule or seeded_schedule(seed, name, PACKER_CYCLE_TIME)).at(t)
    speed = round(60.0 / PACKER_CYCLE_TIME + 2.0 * math.sin(t / 60.0), 3) if moment.running \
        else 0.0
    return {
        "good_count": moment.parts - moment.rejects, "reject_count": moment.rejects,
        "pack_counter": moment.parts, "stop_reason": moment.reason,
        "speed": speed,
        "energy_meter": round(15234.75 + t * 0.0042, 6),
        "operating_seconds": 86_400 * 400 + int(t),
        "film_tension": round(12.5 + rng.uniform(-0.05, 0.05), 4),
        "motor_on": moment.state != FAULT, "conveyor_running": moment.running,
        "jam_sensor": moment.state == FAULT and moment.reason == 11, "guard_closed": True,
    }


Model = Callable[..., Values]  # (t, tick, seed, name, schedule=None) -> values
MODELS: dict[str, Model] = {
    "stamping_press": stamping_press,
    "injection_moulding": injection_moulding,
    "packaging_line": packaging_line,
}


@dataclass(frozen=True)
class RateSetpoint:
    """A setpoint for how fast a machine makes parts (see Machine._count_at_rate)."""

    tag: str
    default: int
    cycle_time: float  # s per part at the default rate (the seeded schedule's)
    running: str  # the bool that says the machine is making parts
    counters: tuple[str, ...]  # the counters that count those parts


PRESS_STROKE_SETPOINT = round(60 / PRESS_CYCLE_TIME)  # 27/min until a client writes another
PACKER_SPEED_SETPOINT = round(60 / PACKER_CYCLE_TIME)  # 55 packs/min
BARREL_SETPOINT = 245.0  # degC: the moulding machine's nozzle zone (zone 3) at start
BARREL_TIME_CONSTANT = 15.0  # s: the barrel heats or cools to a new setpoint first-order
RATE_SETPOINTS = {
    "stamping_press": RateSetpoint("stroke_setpoint", PRESS_STROKE_SETPOINT, PRESS_CYCLE_TIME,
                                   "running", ("cycle_counter",)),
    "packaging_line": RateSetpoint("speed_setpoint", PACKER_SPEED_SETPOINT, PACKER_CYCLE_TIME,
                                   "conveyor_running", ("pack_counter", "good_count")),
}
SETPOINTS: dict[str, Values] = {
    "stamping_press": {"stroke_setpoint": PRESS_STROKE_SETPOINT},
    "injection_moulding": {"barrel_setpoint": BARREL_SETPOINT},
    "packaging_line": {"speed_setpoint": PACKER_SPEED_SETPOINT},
}
"""Per machine kind, the registers a client writes and the model follows, with their start.
A written 0 hands the value back to the model (its start value)."""


@dataclass
class Machine:
    """One simulated machine: its map entry and its model."""

    name: str
    unit_id: int
    kind: str
    tags: list[dict[str, Any]]
    area: str = ""
    line: str = ""
    values: Values = field(default_factory=dict)
    schedule: Schedule | None = None
    """Replaces the seeded schedule of a press or packer (a test scripting its OEE)."""
    setpoints: Values = field(default_factory=dict)
    """What clients wrote to the machine's setpoint registers (see SETPOINTS)."""
    extra_parts: float = 0.0
    """Parts made beyond the schedule's, running at another rate setpoint (RATE_SETPOINTS)."""
    barrel: float = BARREL_SETPOINT
    """The moulding machine's nozzle zone temperature as it follows barrel_setpoint."""
    last_t: float | None = None
    last_counts: dict[str, int] = field(default_factory=dict)

    def update(self, t: float, tick: int, seed: int) -> Values:
        values = MODELS[self.kind](t, tick, seed, self.name, schedule=self.schedule)
        values = follow_setpoints(self.kind, values, self.setpoints)
        last, self.last_t = self.last_t, t
        went_back = last is not None and t < last
        dt = t - last if last is not None and t > last else 0.0
        values = self._count_at_rate(values, dt, went_back)
        self.values = self._heat_to_setpoint(values, dt)
        return self.values

    def _count_at_rate(self, values: Values, dt: float, went_back: bool) -> Values:
        """A running machine's counters gain parts at its rate setpoint: the parts the setpoint
        makes beyond (or short of) the schedule's accumulate smoothly, so a counter never jumps;
        at the default setpoint nothing accumulates (the seeded schedule holds)."""
        rated = RATE_SETPOINTS.get(self.kind)
        if rated is None:
            return values
        rate = values.get(rated.tag) or rated.default
        if dt and values.get(rated.running):
            self.extra_parts += (rate / rated.default - 1) * dt / rated.cycle_time
        counted = dict(values)
        for name in rated.counters:
            count = max(values[name] + math.floor(self.extra_parts), 0)
            if not went_back:  # a slower setpoint never counts backwards
                count = max(count, self.last_counts.get(name, 0))
            self.last_counts[name] = count
            counted[name] = count % 2**32
        return counted

    def _heat_to_setpoint(self, values: Values, dt: float) -> Values:
        """The barrel zones approach `barrel_setpoint` first-order (time constant
        BARREL_TIME_CONSTANT), keeping their offsets from the nozzle zone and their noise."""
        if "barrel_setpoint" not in values:
            return values
        target = values["barrel_setpoint"] or BARREL_SETPOINT
        self.barrel += (target - self.barrel) * (1 - math.exp(-dt / BARREL_TIME_CONSTANT))
        offset = self.barrel - BARREL_SETPOINT
        if not offset:
            return values
        return {**values, **{zone: round(values[zone] + offset, 2)
                             for zone in ("barrel_zone_1", "barrel_zone_2", "barrel_zone_3")}}


def follow_setpoints(kind: str, values: Values, written: Values) -> Values:
    """The model's values with the setpoints applied: a running press strokes at its
    `stroke_setpoint`, a running packer's speed scales with its `speed_setpoint` (0 holds the
    model's own rate). The counters and the barrel temperature follow in Machine.update."""
    setpoints = {**SETPOINTS.get(kind, {}), **written}
    values = {**values, **setpoints}
    rate = setpoints.get("stroke_setpoint")
    if rate and values.get("running"):
        values["strokes_per_minute"] = rate
    speed = setpoints.get("speed_setpoint")
    if speed and values.get("speed"):
        values["speed"] = round(values["speed"] * speed / PACKER_SPEED_SETPOINT, 3)
    return values


def load_machines() -> list[Machine]:
    return [Machine(name=m["name"], unit_id=m["unit_id"], kind=m["kind"], tags=m["tags"],
                    area=m.get("area", ""), line=m.get("line", ""))
            for m in register_map()]
