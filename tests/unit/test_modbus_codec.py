"""Register codecs: golden vectors from real device manuals and round trips in every order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.codec import (
    apply_scale,
    decode_registers,
    encode_value,
    register_count,
)
from gateway.errors import DecodeError

pytestmark = pytest.mark.unit
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


@pytest.mark.parametrize(("byte_order", "word_order", "registers"), [
    ("big", "big", [0x41AC, 0x0000]),
    ("big", "little", [0x0000, 0x41AC]),
    ("little", "big", [0xAC41, 0x0000]),
    ("little", "little", [0x0000, 0xAC41]),
])
def test_float32_21_5_in_every_order(byte_order: str, word_order: str,
                                     registers: list[int]) -> None:
    assert decode_registers(registers, "float32", byte_order, word_order) == 21.5  # type: ignore[arg-type]
    assert encode_value(21.5, "float32", byte_order, word_order) == registers  # type: ignore[arg-type]


@pytest.mark.parametrize(("registers", "data_type", "byte_order", "word_order", "value"), [
    ([0xFFFE], "int16", "big", "big", -2),
    ([0xFEFF], "int16", "little", "big", -2),
    ([0xFFFE], "uint16", "big", "big", 65534),
    ([0x0001, 0x0000], "int32", "big", "big", 65536),
    ([0x0000, 0x0001], "uint32", "big", "little", 65536),
    ([0xFFFF, 0xFFFF], "int32", "big", "big", -1),
    ([0x1234, 0x5678], "uint32", "big", "big", 0x12345678),
    ([0x5678, 0x1234], "uint32", "big", "little", 0x12345678),
    ([0x3412, 0x7856], "uint32", "little", "big", 0x12345678),
    ([0x7856, 0x3412], "uint32", "little", "little", 0x12345678),
    ([0x0102, 0x0304, 0x0506, 0x0708], "uint64", "big", "big", 0x0102030405060708),
    ([0x0708, 0x0506, 0x0304, 0x0102], "uint64", "big", "little", 0x0102030405060708),
    ([0xFFFF, 0xFFFF, 0xFFFF, 0xFFF6], "int64", "big", "big", -10),
    ([0x4035, 0x8000, 0x0000, 0x0000], "float64", "big", "big", 21.5),
    ([0x0000, 0x0000, 0x8000, 0x4035], "float64", "big", "little", 21.5),
])
def test_golden_vectors(registers: list[int], data_type: str, byte_order: str,
                        word_order: str, value: object) -> None:
    assert decode_registers(registers, data_type, byte_order, word_order) == value  # type: ignore[arg-type]


def test_string_strips_trailing_nuls_and_spaces() -> None:
    assert decode_registers([0x5245, 0x4349, 0x5045, 0x2D37, 0x2000, 0x0000], "string",
                            length=6) == "RECIPE-7"


def test_string_little_byte_order_swaps_each_pair() -> None:
    assert decode_registers([0x4552, 0x4943], "string", "little", length=2) == "RECI"


def test_bit_picks_one_bit_of_a_status_word() -> None:
    word = [0b0000_0000_0000_1010]
    assert [decode_registers(word, "bool", bit=b) for b in range(4)] == [False, True, False, True]
    assert decode_registers([0x0100], "bool", "little", bit=0) is True


def test_wrong_register_count_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="float32 needs 2 register"):
        decode_registers([1], "float32")
    with pytest.raises(DecodeError, match="out of range"):
        decode_registers([70000], "uint16")


def test_register_counts() -> None:
    assert [register_count(t) for t in ("bool", "int16", "int32", "float32", "int64",
                                        "float64")] == [1, 1, 2, 2, 4, 4]
    assert register_count("string", 8) == 8


def test_scale_keeps_integers_when_identity() -> None:
    assert apply_scale(215, 1.0, 0.0) == 215 and isinstance(apply_scale(215, 1.0, 0.0), int)
    assert apply_scale(215, 0.1, -1.5) == pytest.approx(20.0)


INT_RANGES = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
              "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}
orders = st.sampled_from(ORDERS)


@given(st.sampled_from(sorted(INT_RANGES)), orders, st.data())
def test_integers_round_trip_in_every_order(data_type: str, order: tuple[str, str],
                                            data: st.DataObject) -> None:
    value = data.draw(st.integers(*INT_RANGES[data_type]))
    registers = encode_value(value, data_type, *order)  # type: ignore[arg-type]
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode_registers(registers, data_type, *order) == value  # type: ignore[arg-type]


@given(st.floats(width=32, allow_nan=False), orders)
def test_float32_round_trips_in_every_order(value: float, order: tuple[str, str]) -> None:
    # The decoded value is the shortest decimal of the same float32 (test_modbus_encode.py).
    registers = encode_value(value, "float32", *order)  # type: ignore[arg-type]
    decoded = decode_registers(registers, "float32", *order)  # type: ignore[arg-type]
    assert struct.pack(">f", decoded) == struct.pack(">f", value)


@given(st.floats(allow_nan=False), orders)
def test_float64_round_trips_in_every_order(value: float, order: tuple[str, str]) -> None:
    registers = encode_value(value, "float64", *order)  # type: ignore[arg-type]
    assert decode_registers(registers, "float64", *order) == value  # type: ignore[arg-type]


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), max_size=16),
       st.sampled_from(["big", "little"]))
def test_strings_round_trip(text: str, byte_order: str) -> None:
    registers = encode_value(text, "string", byte_order, length=8)  # type: ignore[arg-type]
    assert decode_registers(registers, "string", byte_order, length=8) == text  # type: ignore[arg-type]


@given(st.integers(0, 0xFFFF), st.integers(0, 15))
def test_bit_matches_integer_arithmetic(word: int, bit: int) -> None:
    assert decode_registers([word], "bool", bit=bit) == bool(word & (1 << bit))


@given(orders)
def test_nan_decodes_as_nan(order: tuple[str, str]) -> None:
    registers = encode_value(math.nan, "float32", *order)  # type: ignore[arg-type]
    assert math.isnan(decode_registers(registers, "float32", *order))  # type: ignore[arg-type]


def test_encoding_agrees_with_struct_for_big_endian() -> None:
    raw = struct.pack(">f", 1.5)
    assert encode_value(1.5, "float32") == [int.from_bytes(raw[:2], "big"),
                                            int.from_bytes(raw[2:], "big")]


@given(st.booleans(), orders)
def test_bool_round_trips_in_every_order(value: bool, order: tuple[str, str]) -> None:
    registers = encode_value(value, "bool", *order)  # type: ignore[arg-type]
    assert decode_registers(registers, "bool", *order) is value  # type: ignore[arg-type]


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=8), orders)
def test_word_order_does_not_reorder_strings(text: str, order: tuple[str, str]) -> None:
    registers = encode_value(text, "string", *order, length=4)  # type: ignore[arg-type]
    assert registers == encode_value(text, "string", order[0], "big", length=4)  # type: ignore[arg-type]
    assert decode_registers(registers, "string", *order, length=4) == text  # type: ignore[arg-type]


def test_string_bytes_above_ascii_decode_as_latin_1() -> None:
    assert decode_registers([0x4DB0, 0x4300], "string", length=2) == "M\u00b0C"


def test_string_too_long_for_its_registers_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 4 characters"):
        encode_value("ABCDE", "string", length=2)
