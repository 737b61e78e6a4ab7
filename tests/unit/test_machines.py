"""The register map covers every type and order, its layouts are sound, the models keep their
rates, and the simulator's encoder round-trips (golden vectors and the demo-config match are in
test_simulator_models.py)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.modbus.encoding import FORMATS, from_registers, to_registers
from simulators.modbus.machines import (
    MODELS,
    PACKER_CYCLE_TIME,
    PRESS_CYCLE_TIME,
    load_machines,
    register_map,
)
from simulators.modbus.schedule import REASONS, seeded_schedule
from simulators.modbus.server import TABLE_SIZE, _Unit

pytestmark = pytest.mark.unit
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
ALL_TAGS = [(m["name"], tag) for m in register_map() for tag in m["tags"]]


def width(tag: dict[str, Any]) -> int:
    if tag["table"] in ("coil", "discrete") or tag["type"] == "bool":
        return 1
    if tag["type"] == "string":
        return int(tag["length"])
    return struct.calcsize(FORMATS[tag["type"]]) // 2


def test_register_map_uses_every_type_and_every_way_to_hold_a_bool() -> None:
    types = {tag["type"] for _, tag in ALL_TAGS}
    assert types == {"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                     "float32", "float64", "string"}
    bool_places = {"bit" if "bit" in tag else tag["table"]
                   for _, tag in ALL_TAGS if tag["type"] == "bool"}
    assert bool_places == {"bit", "coil", "discrete"}


def test_register_map_has_every_byte_and_word_order_on_multi_register_values() -> None:
    orders = {(tag.get("byte_order", "big"), tag.get("word_order", "big"))
              for _, tag in ALL_TAGS if width(tag) > 1 and tag["type"] != "string"}
    assert orders == set(ORDERS)
    tables = {tag["table"] for _, tag in ALL_TAGS if width(tag) > 1}
    assert tables == {"holding", "input"}
    little_words_input = {tag["type"] for _, tag in ALL_TAGS
                          if tag["table"] == "input" and tag.get("word_order") == "little"}
    assert little_words_input, "the input table needs a little word order value too"


def test_uint32_counts_of_the_packaging_line_use_little_word_order() -> None:
    packer = next(m for m in register_map() if m["unit_id"] == 3)
    counts = [t for t in packer["tags"] if t["name"] in ("good_count", "reject_count")]
    assert [(t["type"], t.get("word_order")) for t in counts] == [("uint32", "little")] * 2


@pytest.mark.parametrize("machine", register_map(), ids=lambda m: m["name"])
def test_tags_of_a_machine_never_overlap_except_bits_of_their_status_word(
        machine: dict[str, Any]) -> None:
    owner: dict[tuple[str, int], str] = {}
    words = {(t["table"], t["address"]) for t in machine["tags"] if "bit" not in t}
    for tag in machine["tags"]:
        if "bit" in tag:
            assert (tag["table"], tag["address"]) in words, f"{tag['name']}: no status word"
            continue
        for address in range(tag["address"], tag["address"] + width(tag)):
            assert address < TABLE_SIZE
            key = (tag["table"], address)
            assert key not in owner, f"{tag['name']} overlaps {owner.get(key)}"
            owner[key] = tag["name"]


def test_status_word_bits_agree_with_the_bool_values() -> None:
    press = next(m for m in load_machines() if m.unit_id == 1)
    for t in (0.0, 50.0, 112.0, 117.0, 119.0, 240.5):
        values = press.update(t, int(t * 10), seed=0)
        for tag in press.tags:
            if "bit" in tag:
                assert bool(values["status_word"] >> tag["bit"] & 1) == values[tag["name"]], t


@given(t=st.floats(min_value=0, max_value=30 * 86_400, allow_nan=False))
def test_every_modelled_value_fits_its_registers(t: float) -> None:
    for machine in load_machines():
        _Unit(machine).store(machine.update(t, int(t * 10), seed=5))


@given(t=st.floats(min_value=0, max_value=86_400), dt=st.floats(min_value=0, max_value=3600))
def test_counters_never_go_backwards(t: float, dt: float) -> None:
    counters = {"stamping_press": ("cycle_counter", "reject_counter"),
                "injection_moulding": ("shot_counter", "energy_total"),
                "packaging_line": ("good_count", "reject_count", "pack_counter",
                                   "operating_seconds")}
    for kind, names in counters.items():
        before, after = MODELS[kind](t, 0, 1, "m"), MODELS[kind](t + dt, 0, 1, "m")
        for name in names:
            assert after[name] >= before[name], (kind, name)


def test_packaging_line_packs_one_per_cycle_of_its_running_time() -> None:
    packer = MODELS["packaging_line"]
    schedule = seeded_schedule(0, "p", PACKER_CYCLE_TIME)
    for seconds in (0, 1, 49, 50, 3600):
        values = packer(float(seconds), seconds * 10, 0, "p")
        made = int(schedule.at(seconds).run_seconds / PACKER_CYCLE_TIME + 1e-9)
        assert values["good_count"] + values["reject_count"] == values["pack_counter"]
        # Each run segment counts only its whole cycles: at most one part per segment less.
        assert made - len(schedule.segments) <= values["pack_counter"] <= made


def test_press_strokes_only_while_running() -> None:
    press = MODELS["stamping_press"]
    schedule = seeded_schedule(0, "p", PRESS_CYCLE_TIME)
    start = sum(s.seconds for s in schedule.segments[:1])  # the first stop begins here
    stop = schedule.segments[1]
    paused = [press(start + f * stop.seconds, 0, 0, "p") for f in (0.01, 0.5, 0.99)]
    assert len({v["cycle_counter"] for v in paused}) == 1
    assert all(not v["running"] and v["strokes_per_minute"] == 0 for v in paused)
    assert {v["stop_reason"] for v in paused} == {stop.reason} and stop.reason != 0
    running = press(start / 2, 0, 0, "p")
    assert running["running"] and running["stop_reason"] == 0


def test_stop_reason_enum_of_the_register_map_names_every_reason_code() -> None:
    for machine in register_map():
        for tag in machine["tags"]:
            if tag["name"] == "stop_reason":
                assert tag["enum"] == REASONS, machine["name"]


def test_strings_take_two_characters_per_register_padded_with_nul() -> None:
    assert to_registers("PP-17", "string", length=4) == [0x5050, 0x2D31, 0x3700, 0x0000]
    assert to_registers("ABCDEFGH", "string", length=2) == [0x4142, 0x4344]
    assert to_registers("AB", "string", "little", length=1) == [0x4241]


def decode(registers: list[int], data_type: str, byte_order: str, word_order: str) -> Any:
    words = [r.to_bytes(2, "big") for r in registers]
    words = [w[::-1] for w in words] if byte_order == "little" else words
    words = words[::-1] if word_order == "little" else words
    return struct.unpack(">" + FORMATS[data_type], b"".join(words))[0]


def typed_values() -> st.SearchStrategy[tuple[str, Any]]:
    ints = [st.tuples(st.just(name), st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
            for name, bits in (("int16", 16), ("int32", 32), ("int64", 64))]
    uints = [st.tuples(st.just(name), st.integers(0, 2 ** bits - 1))
             for name, bits in (("uint16", 16), ("uint32", 32), ("uint64", 64))]
    floats = [st.tuples(st.just("float32"), st.floats(width=32, allow_nan=False)),
              st.tuples(st.just("float64"), st.floats(allow_nan=False))]
    return st.one_of(*ints, *uints, *floats)


@given(typed=typed_values(), orders=st.sampled_from(ORDERS))
def test_every_numeric_type_round_trips_in_every_order(typed: tuple[str, Any],
                                                       orders: tuple[str, str]) -> None:
    data_type, value = typed
    registers = to_registers(value, data_type, *orders)
    assert len(registers) == struct.calcsize(FORMATS[data_type]) // 2
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, data_type, *orders) == value
    assert from_registers(registers, data_type, *orders) == value  # what a setpoint takes


def test_int64_word_order_golden_vector() -> None:
    value = 0x0102030405060708
    assert to_registers(value, "int64") == [0x0102, 0x0304, 0x0506, 0x0708]
    assert to_registers(value, "int64", "big", "little") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert to_registers(value, "int64", "little", "little") == [0x0807, 0x0605, 0x0403, 0x0201]
