"""Line protocol for readings: golden lines, and a round trip through an independent parser that
reads lines the way InfluxDB 1.6.7 does (its escaping rules were measured against the real
server; see gateway/sinks/line_protocol.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.models import Quality, Reading, bad_reading
from gateway.sinks import DeviceContext
from gateway.sinks.line_protocol import (
    escape_measurement,
    timestamp_ns,
    to_line,
    to_lines,
)

pytestmark = pytest.mark.unit

TS = datetime(2026, 11, 24, 1, 2, 3, 123456, tzinfo=UTC)
TS_NS = 1795482123123456000
PRESS = DeviceContext(gateway="edge-01", site="jeonju", area="stamping", line="line-1",
                      device="press-01")
PREFIX = "press-01,gateway=edge-01,site=jeonju,area=stamping,line=line-1"


def reading(value: Any, tag: str = "t", device: str = "press-01", ts: datetime = TS,
            quality: Quality = Quality.GOOD) -> Reading:
    return Reading(device=device, tag=tag, value=value, quality=quality, source_ts=ts)


# -- an independent reader of line protocol, with InfluxDB 1.6.7's unescaping --------------

MEASUREMENT_CODES = ', "='  # what InfluxDB unescapes after a backslash, per position
TAG_CODES = ", ="
FIELD_KEY_CODES = ', "='


def scan(line: str, start: int, stops: str) -> tuple[str, int]:
    """The raw token from `start` up to an unescaped stop character (a backslash always
    takes the next character with it, as InfluxDB's scanner does)."""
    i = start
    while i < len(line) and line[i] not in stops:
        i += 2 if line[i] == "\\" else 1
    return line[start:i], min(i, len(line))


def unescape(raw: str, codes: str) -> str:
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in codes:
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def parse_string(line: str, start: int) -> tuple[str, int]:
    assert line[start] == '"'
    out, i = [], start + 1
    while line[i] != '"':
        if line[i] == "\\" and line[i + 1] in '\\"':
            out.append(line[i + 1])
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out), i + 1


def parse_value(raw: str) -> bool | int | float:
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    assert "\n" not in line and "\r" not in line
    raw, i = scan(line, 0, ", ")
    measurement = unescape(raw, MEASUREMENT_CODES)
    tags: dict[str, str] = {}
    while line[i] == ",":
        raw_key, i = scan(line, i + 1, "=")
        raw_value, i = scan(line, i + 1, ", ")
        assert raw_key and raw_value, "InfluxDB rejects empty tag keys and values"
        tags[unescape(raw_key, TAG_CODES)] = unescape(raw_value, TAG_CODES)
    assert line[i] == " "
    fields: dict[str, Any] = {}
    while line[i] in ", ":
        raw_key, i = scan(line, i + 1, "=")
        assert raw_key
        value: Any
        if line[i + 1] == '"':
            value, i = parse_string(line, i + 1)
        else:
            raw_value, i = scan(line, i + 1, ", ")
            value = parse_value(raw_value)
        fields[unescape(raw_key, FIELD_KEY_CODES)] = value
        if line[i] == " ":
            break
    return measurement, tags, fields, int(line[i + 1:])


# -- what the documented lossy rules turn names and strings into ---------------------------

def expected_name(name: str, unescaped_after: str) -> str:
    name = name.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return "".join("/" if c == "\\" and (i == len(name) - 1 or name[i + 1] in unescaped_after)
                   else c for i, c in enumerate(name))


def expected_string(value: str) -> str:
    return value.replace("\n", "\\n").replace("\r", "\\r")


# -- golden lines -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "field"), [
    (21.5, "t=21.5"),
    (-0.001, "t=-0.001"),
    (1e20, "t=1e+20"),
    (5, "t=5i"),
    (-(2**63), f"t={-(2**63)}i"),
    (2**64 - 1, "t=1.8446744073709552e+19"),
    (True, "t=true"),
    (False, "t=false"),
    ("P-17", 't="P-17"'),
    ('say "hi" \\o/', 't="say \\"hi\\" \\\\o/"'),
    ("two\nlines\r", 't="two\\nlines\\r"'),
])
def test_each_value_type_has_its_golden_line(value: Any, field: str) -> None:
    assert to_line(reading(value), PRESS) == f"{PREFIX} {field} {TS_NS}"


def test_timestamp_is_exact_integer_nanoseconds() -> None:
    far = datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert timestamp_ns(far) == 7258118399999999000
    assert timestamp_ns(TS) == TS_NS
    assert timestamp_ns(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)) == 1000


def test_empty_area_and_line_are_left_out_because_influxdb_rejects_empty_tag_values() -> None:
    ctx = DeviceContext(gateway="edge-01", site="jeonju", area="", line="", device="press-01")
    assert to_line(reading(1.0), ctx) == f"press-01,gateway=edge-01,site=jeonju t=1.0 {TS_NS}"


def test_separators_in_names_are_escaped() -> None:
    ctx = DeviceContext(gateway="edge 01", site="a=b,c", area="x", line="y",
                        device="press 1,=x")
    line = to_line(reading(1, tag="oil temp,=degC"), ctx)
    assert line == ("press\\ 1\\,=x,gateway=edge\\ 01,site=a\\=b\\,c,area=x,line=y "
                    f"oil\\ temp\\,\\=degC=1i {TS_NS}")


def test_backslash_that_influxdb_would_read_as_an_escape_becomes_a_slash() -> None:
    assert escape_measurement("a\\b") == "a\\b"  # unambiguous: kept
    assert escape_measurement("a\\") == "a/"
    assert escape_measurement("a\\,b") == "a/\\,b"
    assert escape_measurement('a\\"b') == 'a/"b'


def test_newline_in_a_name_becomes_an_escaped_space() -> None:
    ctx = DeviceContext(gateway="g", site="s", area="a\nb", line="", device="p")
    expected = f"p,gateway=g,site=s,area=a\\ b x\\ y=1i {TS_NS}"
    assert to_line(reading(1, tag="x\r\ny"), ctx) == expected


def test_bad_quality_and_missing_values_write_nothing() -> None:
    assert to_line(bad_reading("press-01", "t", "timeout", ts=TS), PRESS) is None
    assert to_line(reading(None, quality=Quality.UNCERTAIN), PRESS) is None


def test_uncertain_readings_are_written() -> None:
    assert to_line(reading(2.5, quality=Quality.UNCERTAIN), PRESS) == f"{PREFIX} t=2.5 {TS_NS}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_dropped(value: float) -> None:
    assert to_line(reading(value), PRESS) is None


def test_to_lines_counts_what_it_did_not_write() -> None:
    readings = [reading(1.0), reading(math.nan), bad_reading("press-01", "t", "x", ts=TS),
                reading(2, device="#comment"), reading(3, device="gone")]
    contexts = {"press-01": PRESS,
                "#comment": DeviceContext("edge-01", "jeonju", "", "", "#comment")}
    batch = to_lines(readings, contexts)
    assert batch.lines == [f"{PREFIX} t=1.0 {TS_NS}",
                           f"gone,gateway=edge-01,site=jeonju t=3i {TS_NS}"]
    assert (batch.no_value, batch.not_finite, batch.invalid_name) == (1, 1, 1)


def test_arrays_write_no_line_and_are_named_for_the_sink() -> None:
    batch = to_lines([reading([1.0, 2.0], tag="axes"), reading(1.0)], {"press-01": PRESS})
    assert batch.lines == [f"{PREFIX} t=1.0 {TS_NS}"]
    assert batch.arrays == [("press-01", "axes")] and batch.no_value == 0


# -- round trip of arbitrary names and values ---------------------------------------------

# Any unicode, with the characters line protocol treats specially drawn often.
chars = st.one_of(st.sampled_from(',= "\\\n\r#'), st.characters(codec="utf-8"))
names = st.text(chars, min_size=1, max_size=12)
maybe_empty = st.text(chars, max_size=8)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(chars, max_size=20),
)
instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.just(UTC))


@given(device=names.filter(lambda n: not n.startswith("#")), tag=names, value=values,
       ts=instants, gateway=maybe_empty, site=maybe_empty, area=maybe_empty, line=maybe_empty)
@example(device='a\\"\\=\\,\\ \\\\', tag='k\\"\\=\\', value='\\"\n\\', ts=TS,
         gateway="\\", site="s\\=\\,", area='\\"', line="\r\n")
def test_lines_parse_back_to_what_was_written(device: str, tag: str, value: Any, ts: datetime,
                                              gateway: str, site: str, area: str,
                                              line: str) -> None:
    ctx = DeviceContext(gateway=gateway, site=site, area=area, line=line, device=device)
    text = to_line(reading(value, tag=tag, device=device, ts=ts), ctx)
    assert text is not None

    measurement, tags, fields, ns = parse_line(text)

    assert measurement == expected_name(device, MEASUREMENT_CODES)
    wanted_tags = {"gateway": gateway, "site": site, "area": area, "line": line}
    assert tags == {k: expected_name(v, TAG_CODES) for k, v in wanted_tags.items() if v}
    expected_value = expected_string(value) if isinstance(value, str) else value
    assert fields == {expected_name(tag, FIELD_KEY_CODES): expected_value}
    assert type(fields[expected_name(tag, FIELD_KEY_CODES)]) is type(value)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert ns == timestamp_ns(ts) == (ts - epoch) // timedelta(microseconds=1) * 1000


@given(value=st.text(chars))
def test_string_values_round_trip_exactly_without_newlines(value: str) -> None:
    value = value.replace("\n", "").replace("\r", "")
    _, _, fields, _ = parse_line(to_line(reading(value), PRESS) or "")
    assert fields == {"t": value}


any_values = st.one_of(values, st.integers(), st.floats(), st.none(),
                       st.tuples(st.integers()))
batch_readings = st.builds(
    lambda device, tag, value, ts, quality: Reading(device=device, tag=tag, value=value,
                                                    quality=quality, source_ts=ts),
    device=st.sampled_from(["press-01", "gone", "#comment", "a b,c"]),
    tag=st.sampled_from(["", "t", "x y", "k=\\"]), value=any_values,
    ts=st.sampled_from([TS, TS + timedelta(microseconds=1)]) | instants,
    quality=st.sampled_from(list(Quality)))


@given(readings=st.lists(batch_readings, max_size=20))
def test_to_lines_writes_what_to_line_writes_and_counts_the_rest(
        readings: list[Reading]) -> None:
    contexts = {"press-01": PRESS, "#comment": DeviceContext("edge-01", "jeonju", "", "", "#c"),
                "a b,c": DeviceContext("edge-01", "", "x", "", "a b,c")}
    batch = to_lines(readings, contexts)
    ctx = [contexts.get(r.device) or DeviceContext("edge-01", "jeonju", "", "", r.device)
           for r in readings]
    expected = [to_line(r, c) for r, c in zip(readings, ctx, strict=True)]
    assert batch.lines == [line for line in expected if line is not None]
    unwritten = sum(line is None for line in expected)
    assert (batch.no_value + batch.not_finite + batch.invalid_name + len(batch.arrays)
            == unwritten)


def test_the_series_heads_kept_across_batches_stay_bounded_and_right() -> None:
    from gateway.sinks import line_protocol

    devices = [f"m{n}" for n in range(line_protocol._HEADS_MAX + 10)]
    contexts = {d: DeviceContext("edge-01", "jeonju", "", "", d) for d in devices}
    for value in (1, 2.5):
        readings = [reading(value, tag="t", device=d) for d in devices]
        batch = to_lines(readings, contexts)
        assert batch.lines == [to_line(r, contexts[r.device]) for r in readings]
        assert len(line_protocol._HEADS) <= line_protocol._HEADS_MAX
