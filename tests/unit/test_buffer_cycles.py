"""One buffer row per cycle (gateway/buffer/cycles.py): every reading comes back as it went in,
and a blob that is not one is a DamagedRow, never a wrong reading or a traceback."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.buffer.cycles import ROW_READINGS, decode_cycle, encode_cycle, split_rows
from gateway.buffer.rows import DamagedRow, micros
from gateway.models import Quality, Reading

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
values = st.one_of(scalars, st.lists(scalars, max_size=4).map(tuple))
readings_st = st.builds(
    Reading, device=st.sampled_from(["press-01", "cnc-ü", ""]), tag=st.text(max_size=6),
    value=values, quality=st.sampled_from(list(Quality)),
    source_ts=st.integers(min_value=0, max_value=3).map(lambda n: T0 + timedelta(microseconds=n)),
    unit=st.none() | st.sampled_from(["degC", "bar"]), error=st.none() | st.text(max_size=5))


def same(a: Reading, b: Reading) -> bool:
    """Equal, with NaN equal to NaN (and the exact type of every value kept)."""
    def key(r: Reading) -> tuple[object, ...]:
        parts = r.value if isinstance(r.value, tuple) else (r.value,)
        marked = tuple(("nan",) if isinstance(v, float) and math.isnan(v) else (type(v), v)
                       for v in parts)
        return (r.device, r.tag, type(r.value), marked, r.quality, r.source_ts, r.unit, r.error)
    return key(a) == key(b)


@settings(max_examples=200, deadline=None)
@given(st.lists(readings_st, min_size=1, max_size=30))
def test_every_reading_comes_back_as_it_went_in(batch: list[Reading]) -> None:
    ts_us, data = encode_cycle(batch)
    back = decode_cycle(data, len(batch))
    assert len(back) == len(batch) and all(same(a, b) for a, b in zip(back, batch, strict=True))
    assert ts_us == min(micros(r.source_ts) for r in batch)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=5))
def test_random_bytes_are_a_damaged_row(data: bytes, count: int) -> None:
    try:
        back = decode_cycle(data, count)
    except DamagedRow:
        return
    assert len(back) == count  # a blob that happens to decode gives exactly `count` readings


def test_a_blob_with_the_wrong_count_is_damaged() -> None:
    _, data = encode_cycle([Reading(device="d", tag="t", value=1, source_ts=T0)] * 3)
    with pytest.raises(DamagedRow):
        decode_cycle(data, 4)


def test_a_poll_of_uint16_registers_is_a_compact_row() -> None:
    poll = [Reading(device="press-01", tag=f"r{i}", value=i * 7, source_ts=T0)
            for i in range(250)]
    _, data = encode_cycle(poll)
    assert len(data) < 250 * 12  # one device and timestamp for the whole poll


def test_big_appends_are_split_into_rows_numbered_by_reading() -> None:
    batch = [Reading(device="d", tag="t", value=i, source_ts=T0)
             for i in range(2 * ROW_READINGS + 5)]
    rows = split_rows(11, batch)
    assert [(last, count) for last, count, _, _ in rows] == [
        (10 + ROW_READINGS, ROW_READINGS), (10 + 2 * ROW_READINGS, ROW_READINGS),
        (15 + 2 * ROW_READINGS, 5)]
    back = [r.value for last, count, _, data in rows for r in decode_cycle(data, count)]
    assert back == list(range(2 * ROW_READINGS + 5))


def test_what_orjson_cannot_write_the_same_goes_through_the_stdlib_encoder() -> None:
    odd = [Reading(device="d", tag="nan", value=math.nan, source_ts=T0),
           Reading(device="d", tag="inf", value=(1.5, -math.inf), source_ts=T0),
           Reading(device="d", tag="big", value=2**80, source_ts=T0),
           Reading(device="d", tag="surrogate", value="a\ud800b", source_ts=T0)]
    for reading in odd:
        _, data = encode_cycle([reading])
        assert data[:1] == b"\x02"
        assert same(decode_cycle(data, 1)[0], reading)


def test_decoded_readings_share_one_fields_set_and_a_copy_leaves_it_alone() -> None:
    batch = [Reading(device="press-01", tag=f"t{i}", value=i, quality=Quality.GOOD,
                     source_ts=T0, unit=None, error=None) for i in range(3)]
    back = decode_cycle(encode_cycle(batch)[1], 3)
    assert back[0].__pydantic_fields_set__ is back[2].__pydantic_fields_set__
    assert back[0].model_fields_set == batch[0].model_fields_set
    back[1].model_copy(update={"value": 9})
    assert back[0].model_fields_set == batch[0].model_fields_set
