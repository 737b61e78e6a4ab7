"""The twins' pure parts: value motion, register round trips, layouts, the rewritten config,
the drill's accounting and the stand-ins' parsing."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import parse_config
from simulators.modbus.encoding import to_registers
from simulators.twin.drill import stand_in_kind, with_sequences
from simulators.twin.drill_report import Phase, drill_report, phase_report, render_table
from simulators.twin.layout import build_layout, register_tag, variant_of
from simulators.twin.modbus import decode
from simulators.twin.rewrite import point_at_twins
from simulators.twin.stand_ins import line_arrivals, mqtt_arrival
from simulators.twin.values import INT_RANGES, motion_for, value_at

pytestmark = pytest.mark.unit
ORDERS = st.sampled_from(["big", "little"])


@given(st.floats(0, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_a_wave_stays_within_min_and_max(t: float, low: float, span: float) -> None:
    motion = motion_for("oil_temperature", "float64", low=low, high=low + span)
    assert low <= value_at(motion, t) <= low + span


@given(st.sampled_from(sorted(INT_RANGES)), st.floats(0, 1e7))
def test_integer_values_fit_their_type(data_type: str, t: float) -> None:
    low, high = INT_RANGES[data_type]
    for name in ("good_count", "speed"):
        value = value_at(motion_for(name, data_type), t)
        assert isinstance(value, int) and low <= value <= high


def test_counters_count_bools_toggle_strings_stay() -> None:
    counter = motion_for("cycle_counter", "uint32")
    assert [value_at(counter, t) for t in (0, 1, 2)] == [value_at(counter, 0) + i
                                                          for i in range(3)]
    toggle = motion_for("running", "bool")
    assert {value_at(toggle, t / 10) for t in range(400)} == {True, False}
    text = motion_for("recipe", "string", length=2)
    assert value_at(text, 0) == value_at(text, 99) == "RECI"


@given(st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
                        "float64"]), ORDERS, ORDERS, st.data())
def test_the_twin_decodes_what_the_simulator_encodes(data_type: str, byte_order: str,
                                                      word_order: str, data: st.DataObject
                                                      ) -> None:
    tag = register_tag(parse_tag({"name": "x", "table": "holding", "address": 0,
                                  "type": data_type, "byte_order": byte_order,
                                  "word_order": word_order}))
    if data_type in INT_RANGES:
        value: float = data.draw(st.integers(*INT_RANGES[data_type]))
    else:
        value = data.draw(st.floats(width=32 if data_type == "float32" else 64,
                                    allow_infinity=False))
    decoded = decode(tag, to_registers(value, data_type, byte_order, word_order))
    assert decoded == value or (math.isnan(value) and math.isnan(decoded))


def parse_tag(tag: dict[str, object]) -> object:
    config = parse_config(yaml.safe_dump(modbus_config([tag])), "<t>", {})
    return config.devices[0].tags[0]  # type: ignore[attr-defined]


def modbus_config(tags: list[dict[str, object]], devices: int = 1) -> dict[str, object]:
    return {"gateway": {"id": "g"}, "sinks": {"mqtt": {"url": "mqtt://h:1883"}},
            "devices": [{"name": f"d{i}", "driver": "modbus",
                         "connection": {"host": "plc", "port": 502, "unit_id": i + 1},
                         "tags": tags} for i in range(devices)]}


def test_devices_on_one_host_port_share_one_server_as_unit_ids() -> None:
    config = parse_config(yaml.safe_dump(modbus_config(
        [{"name": "a", "table": "input", "address": 3}], devices=3)), "<t>", {})
    layout = build_layout(config)
    assert list(layout.modbus) == ["plc:502"]
    assert sorted(layout.modbus["plc:502"].units) == [1, 2, 3]


@pytest.mark.parametrize(("tag", "node", "variant"), [
    ("t", "Types.UInt16", ("UInt16", False)), ("t", "Types.Int16", ("Int16", False)),
    ("t", "Types.ByteString", ("ByteString", False)), ("t", "Types.DoubleArray", ("Double", True)),
    ("state", "Cnc.State", ("String", False)), ("part_counter", "Cnc.Parts", ("UInt32", False)),
    ("motor_on", "M.On", ("Boolean", False)), ("spindle_speed", "S", ("Double", False)),
    ("axes", "Cnc.Axes", ("Double", True))])
def test_opcua_variant_types_from_identifier_or_name(tag: str, node: str,
                                                     variant: tuple[str, bool]) -> None:
    assert variant_of(tag, node) == variant


def test_the_config_is_pointed_at_the_twins() -> None:
    raw = {"devices": [
        {"name": "m", "driver": "modbus", "connection": {"serial": "/dev/ttyUSB0",
                                                         "baudrate": 9600, "unit_id": 4}},
        {"name": "o", "driver": "opcua", "connection": {"endpoint": "opc.tcp://x:4840/",
                                                        "security": "Basic256Sha256",
                                                        "trust": "any"}},
        {"name": "other", "driver": "s7", "connection": {"host": "s7"}}], "sinks": {}}
    data = point_at_twins(raw, {"m": ("127.0.0.1", 1502)}, {"o": "opc.tcp://127.0.0.1:9/"})
    assert data["devices"][0]["connection"] == {"unit_id": 4, "host": "127.0.0.1", "port": 1502}
    assert data["devices"][1]["connection"] == {"endpoint": "opc.tcp://127.0.0.1:9/",
                                                "security": "None"}
    assert data["devices"][2] == raw["devices"][2] and raw["devices"][0]["connection"][
        "serial"] == "/dev/ttyUSB0", "the original is untouched"


def test_the_drill_adds_a_sequence_register_after_the_holding_tags() -> None:
    raw = modbus_config([{"name": "a", "table": "holding", "address": 10, "type": "float64"}])
    data = with_sequences(raw, parse_config(yaml.safe_dump(raw), "<t>", {}))
    assert data["devices"][0]["tags"][-1] == {  # type: ignore[index]
        "name": "drill_sequence", "table": "holding", "address": 14, "type": "uint32"}


def test_stand_in_kinds() -> None:
    assert stand_in_kind("mqtt", "") == "mqtt"
    assert stand_in_kind("acks_early", "mqtt://b:1883") == "mqtt"
    assert stand_in_kind("sparkplug", "mqtt://b:1883") == "sparkplug"
    assert stand_in_kind("influxdb", "http://i:8086") == "influxdb"


def served(numbers: range, at: float = 10.0) -> list[tuple[int, float]]:
    return [(n, at + n) for n in numbers]


def test_a_gap_is_lost_and_a_repeat_is_a_duplicate() -> None:
    phase = Phase("broker", 10.0, 14.0, 100.0)
    report = phase_report(phase, {"d": served(range(1, 6))},
                          {"mqtt": {"d": [(1, 20), (2, 20), (2, 21), (4, 22), (5, 22)]}})
    assert (report["polled"], report["lost"], report["duplicates"]) == (5, 1, 1)
    assert report["recovery_s"] is None  # number 3 never arrived


def test_recovery_is_until_the_backlog_and_a_fresh_reading_arrived() -> None:
    phase = Phase("plc", 10.0, 13.5, 100.0, affected=["d"])
    arrivals = [(n, 11.0 + n) for n in range(1, 6)]
    report = phase_report(phase, {"d": served(range(1, 6))}, {"mqtt": {"d": arrivals}})
    assert report["lost"] == 0 and report["recovery_s"] == pytest.approx(15.0 - 13.5)
    assert report["worst_latency_s"] == pytest.approx(1.0)


def test_the_poll_answered_in_the_instant_of_a_kill_is_not_counted_lost() -> None:
    phase = Phase("kill", 10.0, 20.0, 100.0, kill_marks={"d": 3})
    report = phase_report(phase, {"d": served(range(1, 6))},
                          {"s": {"d": [(1, 30), (2, 30), (4, 30), (5, 30)]}})
    assert (report["lost"], report["unbuffered_at_kill"]) == (0, 1)


def test_what_a_blind_device_served_before_its_first_reading_after_is_unread() -> None:
    phase = Phase("down", 10.0, 13.0, 100.0, affected=["d"], blind=["d"])
    report = phase_report(phase, {"d": served(range(1, 6))},
                          {"s": {"d": [(4, 15), (5, 16)]}})
    assert (report["lost"], report["unread"], report["polled"]) == (0, 3, 2)


def test_totals_and_table() -> None:
    phases = [Phase("a", 0, 0, 13.0), Phase("b", 13.0, 13.0, 100.0)]
    report = drill_report(phases, {"d": served(range(1, 6))},
                          {"mqtt": {"d": [(n, 30) for n in (1, 2, 3, 5)]}})
    assert (report["polled"], report["lost"], report["delivered"]) == (5, 1, {"mqtt": 4})
    table = render_table(report)
    assert table.splitlines()[0].split() == ["fault", "polled", "mqtt", "lost", "dup",
                                             "recovery", "latency"]
    assert table.splitlines()[-1].split()[:4] == ["total", "5", "4", "1"]


def test_line_protocol_and_mqtt_arrivals() -> None:
    body = ('press\\ 01,site=a\\,b temperature=1.5,drill_sequence=42i 1700000000000000000\n'
            'other x=1i\nmill drill_sequence=7i,recipe="a b"\n')
    assert line_arrivals(body) == [("press 01", 42), ("mill", 7)]
    devices = {"press-01"}
    assert mqtt_arrival("p/a/l/press-01/drill_sequence", b'{"value": 9, "quality": "good"}',
                        devices) == ("press-01", 9)
    assert mqtt_arrival("p/a/l/press-01/drill_sequence", b'{"quality": "bad"}', devices) is None
    assert mqtt_arrival("p/a/l/press-01", b'{"drill_sequence": {"value": 3}}',
                        devices) == ("press-01", 3)
    assert mqtt_arrival("p/a/l/press-01/temp", b'{"value": 1}', devices) is None
