from datetime import UTC, datetime

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.values import quality_of, to_reading, to_scalar
from gateway.models import Quality

pytestmark = pytest.mark.unit


def test_arrays_become_json_strings() -> None:
    assert to_scalar([1.0, 2.5]) == "[1.0, 2.5]"


def test_bytestring_becomes_base64_and_datetime_iso() -> None:
    assert to_scalar(b"\x00\x01\xff") == "AAH/"
    assert to_scalar(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00+00:00"
    assert to_scalar(ua.LocalizedText("Running")) == "Running"


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
