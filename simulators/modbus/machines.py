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
    extra_strokes: float = 0.0
    """Strokes the press made beyond its schedule's, running at another stroke_setpoint."""
    last_t: float | None = None
    last_count: int = 0

    def update(self, t: float, tick: int, seed: int) -> Values:
        values = MODELS[self.kind](t, tick, seed, self.name, schedule=self.schedule)
        values = follow_setpoints(self.kind, values, self.setpoints)
        self.values = self._count_at_setpoint(t, values)
        return self.values

    def _count_at_setpoint(self, t: float, values: Values) -> Values:
        """A running press's cycle counter gains strokes at its setpoint rate: the strokes the
        setpoint makes beyond (or short of) the schedule's accumulate smoothly, so the counter
        never jumps; at the default setpoint nothing accumulates (the seeded schedule holds)."""
        last, self.last_t = self.last_t, t
        if "cycle_counter" not in values:
            return values
        rate = values.get("stroke_setpoint") or PRESS_STROKE_SETPOINT
        if last is not None and t > last and values.get("running"):
            self.extra_strokes += (rate / PRESS_STROKE_SETPOINT - 1) * (t - last) / PRESS_CYCLE_TIME
        counted = max(values["cycle_counter"] + math.floor(self.extra_strokes), 0)
        if last is not None and t >= last:  # a slower setpoint never counts backwards
            counted = max(counted, self.last_count)
        self.last_count = counted
        return {**values, "cycle_counter": counted % 2**32}


PRESS_STROKE_SETPOINT = round(60 / PRESS_CYCLE_TIME)  # 27/min until a client writes another
SETPOINTS = {"stamping_press": {"stroke_setpoint": PRESS_STROKE_SETPOINT}}
"""Per machine kind, the registers a client writes and the model follows, with their start."""


def follow_setpoints(kind: str, values: Values, written: Values) -> Values:
    """The model's values with the setpoints applied: a running press strokes at its
    `stroke_setpoint` (0 holds the model's own rate)."""
    setpoints = {**SETPOINTS.get(kind, {}), **written}
    values = {**values, **setpoints}
    rate = setpoints.get("stroke_setpoint")
    if rate and values.get("running"):
        values["strokes_per_minute"] = rate
    return values


def load_machines() -> list[Machine]:
    return [Machine(name=m["name"], unit_id=m["unit_id"], kind=m["kind"], tags=m["tags"],
                    area=m.get("area", ""), line=m.get("line", ""))
            for m in register_map()]
