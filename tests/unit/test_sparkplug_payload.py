"""Sparkplug payload encoding, decoded with the raw schema and the test host's own decoder."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.sparkplug_payload import protobuf_objects
from gateway.models import Quality, Reading
from gateway.sinks.sparkplug import payload as sp
from gateway.sinks.sparkplug.config import SparkplugSinkConfig
from gateway.sinks.sparkplug.sparkplug_b_pb2 import Payload
from tests.sparkplug_host import decode_value, quality_of

pytestmark = pytest.mark.unit
TS = datetime(2026, 11, 24, 1, 2, 3, 123999, tzinfo=UTC)


def encode_one(value: object, datatype: int, quality: Quality = Quality.GOOD,
               historical: bool = False) -> Payload.Metric:
    reading = Reading(device="d", tag="t", value=value, quality=quality, source_ts=TS)  # type: ignore[arg-type]
    data, mismatched = sp.device_data(5, 1000, [(reading, sp.MetricSpec(3, datatype),
                                                 historical)])
    assert mismatched == 0
    decoded = Payload()
    decoded.ParseFromString(data)
    assert decoded.seq == 5 and decoded.timestamp == 1000
    return decoded.metrics[0]


INT_TYPES = [(t, lo, hi) for t, (lo, hi) in sp.INT_RANGES.items()]


@given(st.sampled_from(INT_TYPES).flatmap(
    lambda spec: st.tuples(st.just(spec[0]), st.integers(spec[1], spec[2]))))
def test_every_integer_type_round_trips_over_its_whole_range(case: tuple[int, int]) -> None:
    datatype, value = case
    metric = encode_one(value, datatype)
    assert decode_value(metric, datatype) == value
    assert metric.alias == 3 and not metric.name  # data goes by alias


@given(st.integers(-(2**31), -1))
def test_negative_int32_is_sign_extended_as_tahu_java_does(value: int) -> None:
    assert encode_one(value, sp.INT32).int_value == value + 2**32


@given(st.floats(allow_nan=False, width=32))
def test_float_round_trips(value: float) -> None:
    assert decode_value(encode_one(value, sp.FLOAT), sp.FLOAT) == value


@given(st.floats())
def test_double_round_trips_including_nan(value: float) -> None:
    decoded = decode_value(encode_one(value, sp.DOUBLE), sp.DOUBLE)
    assert decoded == value or (math.isnan(value) and math.isnan(decoded))


@given(st.text())
def test_strings_round_trip(value: str) -> None:
    decoded = decode_value(encode_one(value, sp.STRING), sp.STRING)
    assert decoded == value.encode("utf-8", "replace").decode()


@given(st.lists(st.booleans(), max_size=40))
def test_boolean_arrays_pack_a_count_then_the_bits_msb_first(values: list[bool]) -> None:
    metric = encode_one(tuple(values), sp.BOOLEAN_ARRAY)
    assert decode_value(metric, sp.BOOLEAN_ARRAY) == tuple(values)
    assert struct.unpack("<I", metric.bytes_value[:4]) == (len(values),)


def test_boolean_array_bit_order() -> None:
    metric = encode_one((True, False, True, True), sp.BOOLEAN_ARRAY)
    assert metric.bytes_value == b"\x04\x00\x00\x00\xb0"


@given(st.lists(st.integers(-(2**15), 2**15 - 1), max_size=30))
def test_int16_arrays_are_little_endian(values: list[int]) -> None:
    metric = encode_one(tuple(values), sp.INT16_ARRAY)
    assert metric.bytes_value == struct.pack(f"<{len(values)}h", *values)
    assert decode_value(metric, sp.INT16_ARRAY) == tuple(values)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\0",
                                               blacklist_categories=["Cs"])), max_size=10))
def test_string_arrays_are_nul_terminated(values: list[str]) -> None:
    metric = encode_one(tuple(values), sp.STRING_ARRAY)
    assert decode_value(metric, sp.STRING_ARRAY) == tuple(values)


def test_missing_array_elements_become_zero_or_nan() -> None:
    assert decode_value(encode_one((1, None), sp.INT32_ARRAY), sp.INT32_ARRAY) == (1, 0)
    decoded = decode_value(encode_one((1.5, None), sp.DOUBLE_ARRAY), sp.DOUBLE_ARRAY)
    assert decoded[0] == 1.5 and math.isnan(decoded[1])


def test_bad_is_null_with_quality_0_and_uncertain_keeps_its_value_with_64() -> None:
    bad = encode_one(None, sp.DOUBLE, Quality.BAD)
    assert bad.is_null and not bad.HasField("double_value") and quality_of(bad) == 0
    assert bad.properties.values[0].type == sp.INT32
    uncertain = encode_one(1.5, sp.DOUBLE, Quality.UNCERTAIN)
    assert not uncertain.is_null and uncertain.double_value == 1.5
    assert quality_of(uncertain) == 64
    good = encode_one(1.5, sp.DOUBLE)
    assert len(good.properties.keys) == 0  # good: no Quality property (192 implied)


def test_timestamps_are_exact_milliseconds_and_historical_is_flagged() -> None:
    metric = encode_one(1.0, sp.DOUBLE, historical=True)
    assert metric.timestamp == 1795482123123  # .123999 s: floored, not rounded up by a float
    assert metric.is_historical


@pytest.mark.parametrize(("value", "datatype"), [
    (70000, sp.INT16), (-1, sp.UINT32), ("x", sp.DOUBLE), (2, sp.BOOLEAN), (1.5, sp.INT32),
    (1e39, sp.FLOAT), (5, sp.STRING), (3, sp.INT16_ARRAY)])
def test_a_value_that_does_not_fit_its_datatype_is_sent_bad_and_counted(
        value: object, datatype: int) -> None:
    reading = Reading(device="d", tag="t", value=value, source_ts=TS)  # type: ignore[arg-type]
    data, mismatched = sp.device_data(0, 0, [(reading, sp.MetricSpec(1, datatype), False)])
    decoded = Payload()
    decoded.ParseFromString(data)
    assert mismatched == 1
    assert decoded.metrics[0].is_null and quality_of(decoded.metrics[0]) == 0


@pytest.mark.parametrize(("type_name", "value", "expected"), [
    ("float32", 1.0, sp.FLOAT), ("float64", 1.0, sp.DOUBLE), ("uint16", 1, sp.UINT16),
    ("int64", 1, sp.INT64), ("bool", True, sp.BOOLEAN), ("string", "a", sp.STRING),
    ("array:int16", (1,), sp.INT16_ARRAY), ("array:float64", (1.0,), sp.DOUBLE_ARRAY),
    (None, 1, sp.INT64), (None, 2**63, sp.UINT64), (None, 1.0, sp.DOUBLE),
    (None, True, sp.BOOLEAN), (None, "a", sp.STRING), (None, (True, False), sp.BOOLEAN_ARRAY),
    (None, (1, 2.5), sp.DOUBLE_ARRAY), (None, ("a",), sp.STRING_ARRAY), (None, (), sp.DOUBLE_ARRAY),
    ("no-such-type", 1, sp.INT64)])
def test_datatype_from_the_published_type_else_from_the_value(
        type_name: str | None, value: object, expected: int) -> None:
    assert sp.datatype_of(type_name, value) == expected  # type: ignore[arg-type]


def test_node_birth_and_death_carry_bdseq() -> None:
    birth, death = Payload(), Payload()
    birth.ParseFromString(sp.node_birth(200, 0, 1000))
    death.ParseFromString(sp.node_death(200, 1000))
    assert [(m.name, m.datatype, m.long_value) for m in death.metrics] == [("bdSeq", 8, 200)]
    assert not death.HasField("seq")
    assert birth.seq == 0 and birth.metrics[0].long_value == 200
    assert (birth.metrics[1].name, birth.metrics[1].boolean_value) == (sp.REBIRTH_METRIC, False)


def test_rebirth_requests_are_recognised() -> None:
    request = Payload()
    metric = request.metrics.add()
    metric.name, metric.boolean_value = sp.REBIRTH_METRIC, True
    assert sp.asks_rebirth(request.SerializeToString())
    metric.boolean_value = False
    assert not sp.asks_rebirth(request.SerializeToString())
    with pytest.raises(sp.PayloadError):
        sp.asks_rebirth(b"\xff\xff\xff")


def test_epoch_ms_is_exact_across_a_day() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for step in range(0, 86_400_000, 8_640_001):
        ts = start + timedelta(milliseconds=step, microseconds=999)
        assert sp.epoch_ms(ts) == 1767225600000 + step


def test_config_requires_group_id_and_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="group_id"):
        SparkplugSinkConfig()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="extra"):
        SparkplugSinkConfig(group_id="g", qos=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="group_id"):
        SparkplugSinkConfig(group_id="a/b")
    with pytest.raises(ValidationError, match="barrier_topic"):
        SparkplugSinkConfig(group_id="g", barrier_topic="spBv1.0/x")
    config = SparkplugSinkConfig(group_id="g", edge_node_id="", password="")
    assert config.edge_node_id is None and config.password is None and not config.commands


@given(st.sampled_from([sp.INT8, sp.INT16, sp.INT32, sp.INT64]), st.data())
def test_dcmd_signed_values_round_trip_tahus_twos_complement(datatype: int,
                                                           data: st.DataObject) -> None:
    low, high = sp.INT_RANGES[datatype]
    value = data.draw(st.integers(low, high))
    payload = Payload()
    metric = payload.metrics.add()
    metric.name, metric.datatype = "setpoint", datatype
    sp.set_value(metric, datatype, value)
    [command] = sp.command_metrics(payload.SerializeToString())
    assert (command.name, command.alias, command.value) == ("setpoint", None, value)


def test_dcmd_by_alias_with_a_float_and_garbage_refused() -> None:
    payload = Payload()
    metric = payload.metrics.add()
    metric.alias, metric.datatype, metric.float_value = 7, sp.FLOAT, 42.5
    assert sp.command_metrics(payload.SerializeToString()) == [sp.CommandMetric(None, 7, 42.5)]
    with pytest.raises(sp.PayloadError):
        sp.command_metrics(b"\xff\xff\xff")


ANY_VALUE = st.one_of(
    st.integers(-(2**64), 2**65), st.integers(0, 70_000), st.floats(), st.floats(width=32),
    st.floats(min_value=3.3e38, max_value=3.5e38), st.booleans(), st.none(), st.text(max_size=4),
    st.tuples(st.integers(-5, 5), st.integers(-5, 5)))
METRIC = st.tuples(ANY_VALUE, st.sampled_from(list(Quality)),
                   st.sampled_from([*sorted(sp.SCALAR_TYPES.values()), sp.INT16_ARRAY]),
                   st.integers(0, 2**40), st.booleans(), st.integers(0, 3))


@given(st.lists(METRIC, max_size=12), st.integers(0, 255), st.integers(0, 2**45))
@example([(3.5e38, Quality.GOOD, sp.FLOAT, 1, False, 0), (math.nan, Quality.GOOD, sp.FLOAT, 2,
          True, 1), (2**31, Quality.GOOD, sp.INT32, 3, False, 0)], 0, 0)
def test_ddata_bytes_are_protobufs_own_whatever_the_metrics(
        cases: list[tuple[object, Quality, int, int, bool, int]], seq: int, ts_ms: int) -> None:
    """The hand-written wire format of good scalars and protobuf's path for the rest make
    the same bytes, and count the same mismatches, as protobuf's message objects."""
    stamps = [TS + timedelta(milliseconds=n) for n in range(4)]
    metrics = []
    for n, (value, quality, datatype, alias, historical, stamp) in enumerate(cases):
        reading = Reading(device="d", tag=f"t{n}", value=value, quality=quality,  # type: ignore[arg-type]
                          source_ts=stamps[stamp])
        metrics.append((reading, sp.MetricSpec(alias, datatype), historical))
    assert sp.device_data(seq, ts_ms, metrics) == protobuf_objects(seq, ts_ms, metrics)


@given(st.integers(0, 2**64 - 1))
def test_varint_is_protobufs(number: int) -> None:
    assert sp.varint(number) == Payload(seq=number).SerializeToString()[1:]
