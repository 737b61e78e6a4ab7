import struct
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua import ua_binary
from asyncua.ua.uatypes import datetime_to_win_epoch
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.values import quality_of, to_reading, to_value
from gateway.models import Quality
from gateway.sinks.mqtt_wire import format_ts

pytestmark = pytest.mark.unit


def test_arrays_become_tuples_of_scalars() -> None:
    assert to_value([1.0, 2.5]) == (1.0, 2.5)
    assert to_value([True, False]) == (True, False)
    assert to_value(["a", None]) == ("a", None)
    assert to_value([b"\x00", b"\xff"]) == ("AA==", "/w==")
    assert to_value([datetime(2026, 1, 2, tzinfo=UTC)]) == ("2026-01-02T00:00:00.000000Z",)
    assert to_value([]) == ()


def test_a_matrix_keeps_its_rows_as_json() -> None:
    assert to_value([[1, 2], [3, 4]]) == ("[1, 2]", "[3, 4]")


def test_an_array_reading_holds_a_tuple() -> None:
    dv = ua.DataValue(ua.Variant([1, 2, 3], ua.VariantType.Int32))
    assert to_reading("d", "t", dv, None).value == (1, 2, 3)


def test_bytestring_becomes_base64_and_datetime_iso() -> None:
    assert to_value(b"\x00\x01\xff") == "AAH/"
    assert to_value(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000000Z"
    assert to_value(ua.LocalizedText("Running")) == "Running"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_quality_follows_the_status_severity_bits(code: int) -> None:
    expected = [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD][code >> 30]
    assert quality_of(ua.StatusCode(ua.UInt32(code))) is expected


def test_bad_status_names_the_code_and_keeps_no_value() -> None:
    dv = ua.DataValue(StatusCode=ua.StatusCode(ua.UInt32(ua.StatusCodes.BadNodeIdUnknown)))
    r = to_reading("d", "t", dv, None)
    assert (r.quality, r.value, r.error) == (Quality.BAD, None, "BadNodeIdUnknown")


def test_source_timestamp_wins_over_server_timestamp() -> None:
    src = datetime(2026, 5, 1, tzinfo=UTC)
    dv = ua.DataValue(ua.Variant(3), SourceTimestamp=src,  # type: ignore[arg-type]
                      ServerTimestamp=datetime(2026, 6, 1, tzinfo=UTC))  # type: ignore[arg-type]
    assert to_reading("d", "t", dv, "mm").source_ts == src


def test_100ns_ticks_are_floored_to_the_microsecond_when_decoded() -> None:
    """The contract's resolution: asyncua decodes OPC UA DateTime ticks (100 ns) to µs."""
    ts = datetime(2026, 3, 4, 5, 6, 7, 123457, tzinfo=UTC)
    nine_ticks_later = struct.pack("<q", datetime_to_win_epoch(ts) + 9)
    assert ua_binary.Primitives.DateTime.unpack(Buffer(nine_ticks_later)) == ts


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.sampled_from([UTC, None])))
def test_a_datetime_value_has_the_format_of_every_payload_ts(moment: datetime) -> None:
    """`2020-01-02T03:04:05.678000Z`: the `ts` helper's format, so one parser reads both."""
    reading = to_reading("d", "t", ua.DataValue(ua.Variant(moment, ua.VariantType.DateTime),
                                                SourceTimestamp=moment), None)
    assert reading.value == format_ts(reading)
    assert isinstance(reading.value, str) and reading.value.endswith("Z")
    assert datetime.fromisoformat(reading.value) == moment.replace(tzinfo=UTC)


def test_a_datetime_in_another_zone_is_published_in_utc() -> None:
    seoul = timezone(timedelta(hours=9))
    assert to_value(datetime(2020, 1, 2, 12, 4, 5, 678000, tzinfo=seoul)) == (
        "2020-01-02T03:04:05.678000Z")
