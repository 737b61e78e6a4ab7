"""The simulated machines: deterministic, realistic, and matching the demo config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simulators.modbus.encoding import to_registers
from simulators.modbus.machines import MODELS, load_machines, register_map

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_demo_config_matches_the_register_map_exactly() -> None:
    config = yaml.safe_load((ROOT / "config" / "modbus-demo.yaml").read_text())
    devices = {d["name"]: d for d in config["devices"]}
    machines = register_map()
    assert set(devices) == {m["name"] for m in machines}
    for machine in machines:
        device = devices[machine["name"]]
        assert device["connection"]["unit_id"] == machine["unit_id"]
        assert device["tags"] == machine["tags"]


def test_every_tag_of_the_map_has_a_modelled_value() -> None:
    for machine in load_machines():
        values = machine.update(10.0, 100, seed=1)
        names = {t["name"] for t in machine.tags} - {"poll_sequence"}
        assert names <= set(values), names - set(values)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_same_seed_same_values_other_seed_other_noise(kind: str) -> None:
    model = MODELS[kind]
    assert model(12.3, 123, 7, "m") == model(12.3, 123, 7, "m")
    assert any(model(t, t, 7, "m") != model(t, t, 8, "m") for t in range(1, 50))


def test_press_cycle_counter_rises_at_its_stroke_rate() -> None:
    """One stroke per 2.2 s while running: the first run segment lasts at least 15 s."""
    press = MODELS["stamping_press"]
    assert press(11.0, 110, 0, "p")["cycle_counter"] == 5
    assert press(15.0, 150, 0, "p")["cycle_counter"] == 6
    assert press(15.0, 150, 0, "p")["strokes_per_minute"] == 27


@pytest.mark.parametrize(("byte_order", "word_order", "registers"), [
    ("big", "big", [0x41AC, 0x0000]), ("big", "little", [0x0000, 0x41AC]),
    ("little", "big", [0xAC41, 0x0000]), ("little", "little", [0x0000, 0xAC41]),
])
def test_simulator_encoding_golden_vectors(byte_order: str, word_order: str,
                                           registers: list[int]) -> None:
    assert to_registers(21.5, "float32", byte_order, word_order) == registers
