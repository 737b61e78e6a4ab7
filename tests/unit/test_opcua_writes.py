"""A command's value as the node's Variant, or WriteRefused with the reason (no I/O)."""

import re
from datetime import UTC, datetime

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.opcua.config import OpcUaTag
from drivers.opcua.writes import INTEGER_RANGES, to_variant, variant_type
from gateway.errors import WriteRefused

pytestmark = pytest.mark.unit
V = ua.VariantType
INTEGER_TYPES = sorted(INTEGER_RANGES, key=lambda v: v.value)


@given(st.sampled_from(INTEGER_TYPES), st.data())
def test_every_integer_in_the_types_range_is_written_as_it_is(vtype: ua.VariantType,
                                                             data: st.DataObject) -> None:
    low, high = INTEGER_RANGES[vtype]
    number = data.draw(st.integers(low, high))
    variant = to_variant(number, vtype)
    assert variant.Value == number and variant.VariantType is vtype
    # the same number as a whole float (JSON 120.0) is accepted where float holds it exactly
    if abs(number) < 2**53:
        assert to_variant(float(number), vtype).Value == number


@given(st.sampled_from(INTEGER_TYPES), st.integers(1, 2**70), st.booleans())
def test_an_integer_outside_the_types_range_is_refused(vtype: ua.VariantType, past: int,
                                                       above: bool) -> None:
    low, high = INTEGER_RANGES[vtype]
    with pytest.raises(WriteRefused, match=f"outside the range of {vtype.name}"):
        to_variant(high + past if above else low - past, vtype)


@given(st.sampled_from(INTEGER_TYPES),
       st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
def test_a_fraction_is_refused_for_an_integer_node(vtype: ua.VariantType, value: float) -> None:
    with pytest.raises(WriteRefused, match="not a whole number"):
        to_variant(value, vtype)


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e6, 1e6),
       st.floats(0, 1e6))
def test_min_and_max_bound_a_double(value: float, low: float, span: float) -> None:
    high = low + span
    if low <= value <= high:
        assert to_variant(value, V.Double, low, high).Value == value
    else:
        with pytest.raises(WriteRefused, match=r"below the tag's min|above the tag's max"):
            to_variant(value, V.Double, low, high)


@pytest.mark.parametrize(("value", "vtype", "reason"), [
    (True, V.Int32, "a boolean cannot be written to an Int32 node"),
    (1, V.Boolean, "an integer cannot be written to a Boolean node"),
    ("1.5", V.Double, "a string cannot be written to a Double node"),
    (None, V.Float, "a null cannot be written to a Float node"),
    ([1.0], V.Double, "a list cannot be written to a Double node"),
    (float("nan"), V.Double, "not a finite number"),
    (1e39, V.Float, "outside the range of Float"),
    (10**400, V.Double, "not a finite number"),
    ("yesterday", V.DateTime, "not an ISO 8601 time"),
])
def test_a_value_of_the_wrong_kind_is_refused_with_the_reason(value: object,
                                                              vtype: ua.VariantType,
                                                              reason: str) -> None:
    with pytest.raises(WriteRefused, match=re.escape(reason)):
        to_variant(value, vtype)


def test_text_booleans_and_times_pass_for_their_types() -> None:
    assert to_variant("O2010", V.String).Value == "O2010"
    assert to_variant(False, V.Boolean).Value is False
    assert to_variant("2026-01-02T03:04:05.000000Z", V.DateTime).Value == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_variant_type_of_a_data_type_node() -> None:
    assert variant_type(ua.NodeId(ua.ObjectIds.Double)) is V.Double
    assert variant_type(ua.NodeId(ua.ObjectIds.Int32)) is V.Int32
    assert variant_type(ua.NodeId(ua.ObjectIds.Duration)) is V.Double  # a subtype of Double
    assert variant_type(ua.NodeId(ua.ObjectIds.Structure)) is None
    assert variant_type(ua.NodeId(ua.ObjectIds.ByteString)) is None
    assert variant_type(ua.NodeId(3001, 2)) is None  # a server's own type
    assert variant_type(None) is None


def test_min_and_max_need_writable_and_an_order() -> None:
    with pytest.raises(ValidationError, match="need writable: true"):
        OpcUaTag(name="t", node="ns=2;s=X", max=5)
    with pytest.raises(ValidationError, match=r"min 5\.0 is above max 1\.0"):
        OpcUaTag(name="t", node="ns=2;s=X", writable=True, min=5, max=1)
    assert OpcUaTag(name="t", node="ns=2;s=X").writable is False
