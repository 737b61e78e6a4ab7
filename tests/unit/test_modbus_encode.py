"""encode_value is the exact inverse of decode_registers; float32 is published as its shortest
decimal; scale/offset are reversed for writes."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.modbus.codec import (
    INT_RANGES,
    apply_scale,
    decode_registers,
    encode_value,
    register_count,
    set_bit,
    shortest_float32,
    unscale,
)

pytestmark = pytest.mark.unit
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
NUMERIC = [*INT_RANGES, "float32", "float64"]
orders = st.sampled_from(ORDERS)
registers16 = st.integers(0, 0xFFFF)


def float32_bits(value: float) -> bytes:
    return struct.pack(">f", value)


@given(st.integers(0, 0xFFFFFFFF))
def test_a_float32_is_published_as_the_shortest_decimal_of_the_same_float32(bits: int) -> None:
    register_value = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
    assume(math.isfinite(register_value))
    published = decode_registers([bits >> 16, bits & 0xFFFF], "float32")
    assert float32_bits(published) == float32_bits(register_value)
    digits = _significant(published)
    if digits > 1:  # no decimal with one digit fewer is the same float32
        shorter = float(f"{register_value:.{digits - 1}g}")
        assert float32_bits(shorter) != float32_bits(register_value)


def _significant(value: float) -> int:
    mantissa = f"{abs(value):.9e}".split("e")[0].replace(".", "").rstrip("0")
    return max(1, len(mantissa))


def test_float_noise_examples() -> None:
    assert decode_registers(encode_value(220.44, "float32"), "float32") == 220.44
    assert repr(decode_registers(encode_value(0.1, "float32"), "float32")) == "0.1"
    assert decode_registers(encode_value(220.44, "float64"), "float64") == 220.44
    wide = struct.unpack(">d", struct.pack(">d", 220.44000244140625))[0]
    assert decode_registers(encode_value(wide, "float64"), "float64") == 220.44000244140625
    assert math.isnan(shortest_float32(math.nan)) and shortest_float32(-math.inf) == -math.inf
    assert math.copysign(1, shortest_float32(-0.0)) == -1


def values_of(data_type: str) -> st.SearchStrategy[object]:
    if data_type in INT_RANGES:
        return st.integers(*INT_RANGES[data_type])
    if data_type == "float32":
        return st.floats(width=32, allow_nan=False).map(shortest_float32)
    if data_type == "float64":
        return st.floats(allow_nan=False)
    if data_type == "bool":
        return st.booleans()
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=16).filter(
        lambda text: text == text.rstrip("\x00 "))


@given(st.sampled_from([*NUMERIC, "bool", "string"]), orders, st.data())
def test_decode_of_encode_is_the_value(data_type: str, order: tuple[str, str],
                                       data: st.DataObject) -> None:
    value = data.draw(values_of(data_type))
    length = 8 if data_type == "string" else None
    registers = encode_value(value, data_type, *order, length=length)  # type: ignore[arg-type]
    decoded = decode_registers(registers, data_type, *order, length=length)  # type: ignore[arg-type]
    assert decoded == value and type(decoded) is type(value)


@given(st.sampled_from(NUMERIC), orders, st.data())
def test_encode_of_decode_is_the_registers(data_type: str, order: tuple[str, str],
                                           data: st.DataObject) -> None:
    size = register_count(data_type)  # type: ignore[arg-type]
    registers = data.draw(st.lists(registers16, min_size=size, max_size=size))
    value = decode_registers(registers, data_type, *order)  # type: ignore[arg-type]
    assume(not (isinstance(value, float) and math.isnan(value)))
    assert encode_value(value, data_type, *order) == registers  # type: ignore[arg-type]


@given(st.lists(registers16, min_size=4, max_size=4), st.sampled_from(["big", "little"]))
def test_encode_of_decode_is_the_registers_for_nul_padded_strings(
        registers: list[int], byte_order: str) -> None:
    raw = b"".join(r.to_bytes(2, "big" if byte_order == "big" else "little") for r in registers)
    assume(raw.rstrip(b"\x00") == raw.rstrip(b"\x00 "))  # NUL padding, as encode makes it
    text = decode_registers(registers, "string", byte_order, length=4)  # type: ignore[arg-type]
    assert encode_value(text, "string", byte_order, length=4) == registers  # type: ignore[arg-type]


@given(registers16, st.integers(0, 15), st.booleans(), st.sampled_from(["big", "little"]))
def test_set_bit_changes_that_bit_only(register: int, bit: int, state: bool,
                                       byte_order: str) -> None:
    changed = set_bit(register, bit, state, byte_order)  # type: ignore[arg-type]
    assert decode_registers([changed], "bool", byte_order, bit=bit) is state  # type: ignore[arg-type]
    for other in set(range(16)) - {bit}:
        assert decode_registers([changed], "bool", byte_order, bit=other) == \
            decode_registers([register], "bool", byte_order, bit=other)  # type: ignore[arg-type]
    current = decode_registers([register], "bool", byte_order, bit=bit)  # type: ignore[arg-type]
    assert set_bit(register, bit, bool(current), byte_order) == register  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "data_type", "message"), [
    (70000, "uint16", r"does not fit uint16 \(0\.\.65535\)"),
    (-1, "uint32", "does not fit uint32"),
    (2**63, "int64", "does not fit int64"),
    (2.5, "int16", "not a whole number"),
    (1e39, "float32", "does not fit float32"),
    (True, "int16", "needs a number"),
    ("7", "float32", "needs a number"),
])
def test_values_the_type_cannot_hold_are_refused(value: object, data_type: str,
                                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_value(value, data_type)  # type: ignore[arg-type]


def test_strings_outside_latin_1_or_too_long_are_refused() -> None:
    with pytest.raises(ValueError, match="not a latin-1 character"):
        encode_value("caf\u20ac", "string", length=4)
    with pytest.raises(ValueError, match="longer than 4 characters"):
        encode_value("ABCDE", "string", length=2)
    assert encode_value("AB", "string", length=2) == [0x4142, 0x0000]  # padded with NULs


def test_whole_floats_are_accepted_for_integer_types() -> None:
    assert encode_value(5.0, "int16") == [5]


@given(st.integers(-32768, 32767), st.sampled_from([0.1, 0.01, 0.5, 2.0, 0.001]),
       st.sampled_from([0.0, 1.5, -40.0, 273.15]))
def test_unscale_reverses_apply_scale_for_every_raw_value(raw: int, scale: float,
                                                          offset: float) -> None:
    published = apply_scale(raw, scale, offset)
    assert isinstance(published, float)
    assert unscale(published, scale, offset, "int16") == raw


def test_unscale_rounds_to_the_nearest_raw_step_and_checks_the_range() -> None:
    assert unscale(22.43, 0.1, 0.0, "int16") == 224
    assert unscale(22.47, 0.1, 0.0, "int16") == 225
    assert unscale(-20.0, 0.1, 1.5, "int16") == -215
    with pytest.raises(ValueError, match="does not fit int16"):
        unscale(4000.0, 0.1, 0.0, "int16")
    with pytest.raises(ValueError, match="not a whole number"):
        unscale(2.5, 1.0, 0.0, "uint16")
    assert unscale(7, 1.0, 0.0, "uint16") == 7 and isinstance(unscale(7, 1, 0, "uint16"), int)
    assert unscale(21.5, 1.0, 0.0, "float32") == 21.5


def test_scaled_values_carry_the_decimals_of_the_exact_product() -> None:
    assert apply_scale(2204, 0.1, 0.0) == 220.4  # not 220.40000000000003
    assert apply_scale(1234, 0.01, 0.0) == 12.34
    assert apply_scale(224.0, 0.1, 0.0) == 22.4
    assert apply_scale(-215, 0.1, 1.5) == -20.0
    assert apply_scale(3, 1e-07, 0.0) == 3e-07
    big = apply_scale(2**60, 0.1, 0.0)
    assert big == 2**60 * 0.1  # beyond float64's decimals: left as computed
