"""Answer checks: an answer must answer its request (function code, byte count, echo)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.answers import Expected, check_header, check_pdu, preview

pytestmark = pytest.mark.unit


def read_answer(function: int, data: bytes) -> bytes:
    return bytes([function, len(data)]) + data


@given(st.sampled_from([3, 4]), st.integers(1, 125), st.integers(0, 0xFFFF))
def test_a_correct_register_answer_passes(function: int, count: int, address: int) -> None:
    assert check_pdu(read_answer(function, b"\x00\x01" * count),
                     Expected(function, address, count)) is None


@given(st.sampled_from([1, 2]), st.integers(1, 2000))
def test_a_correct_bit_answer_passes(function: int, count: int) -> None:
    assert check_pdu(read_answer(function, b"\xff" * ((count + 7) // 8)),
                     Expected(function, 0, count)) is None


@given(st.sampled_from([1, 2, 3, 4]), st.sampled_from([1, 2, 3, 4]), st.integers(1, 100))
def test_another_function_code_is_a_mismatch(asked: int, answered: int, count: int) -> None:
    size = 2 * count if answered in (3, 4) else (count + 7) // 8
    problem = check_pdu(read_answer(answered, b"\x00" * size), Expected(asked, 0, count))
    if asked == answered:
        assert problem is None
    else:
        assert problem is not None and problem.kind == "mismatch"
        assert problem.reason == f"answer has function code {answered}, expected {asked}"


@given(st.integers(1, 125), st.integers(0, 255).filter(lambda n: n % 2 == 0))
def test_a_byte_count_other_than_asked_is_malformed(count: int, byte_count: int) -> None:
    answer = read_answer(3, b"\x00" * byte_count)
    problem = check_pdu(answer, Expected(3, 0, count))
    if byte_count == 2 * count:
        assert problem is None
    else:
        assert problem is not None and problem.kind == "malformed"
        assert problem.reason == (f"malformed answer: byte count {byte_count}, expected "
                                  f"{2 * count} ({count} registers)")


def test_a_byte_count_that_lies_about_the_data_is_malformed() -> None:
    problem = check_pdu(b"\x03\x04\x00\x01", Expected(3, 0, 2))
    assert problem is not None and problem.reason == \
        "malformed answer: 2 data bytes, its byte count says 4"
    assert check_pdu(b"\x03", Expected(3, 0, 2)) is not None
    assert check_pdu(b"", Expected(3, 0, 2)) is not None


def test_exception_answers_pass_for_their_own_function_only() -> None:
    assert check_pdu(b"\x83\x02", Expected(3, 0, 1)) is None
    problem = check_pdu(b"\x84\x02", Expected(3, 0, 1))
    assert problem is not None and problem.kind == "mismatch"
    assert "function code 4 (an exception), expected 3" in problem.reason
    assert check_pdu(b"\x83\x02\x00", Expected(3, 0, 1)) is not None


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF))
def test_a_single_write_answer_must_echo_address_and_value(address: int, value: int,
                                                           echoed_address: int,
                                                           echoed_value: int) -> None:
    answer = b"\x06" + struct.pack(">HH", echoed_address, echoed_value)
    problem = check_pdu(answer, Expected(6, address, value=value))
    assert (problem is None) == (address == echoed_address and value == echoed_value)
    if problem is not None:
        assert problem.kind == "mismatch" and "echoes" in problem.reason


def test_a_multiple_write_answer_must_echo_address_and_count() -> None:
    assert check_pdu(b"\x10" + struct.pack(">HH", 100, 2), Expected(16, 100, 2)) is None
    problem = check_pdu(b"\x10" + struct.pack(">HH", 100, 4), Expected(16, 100, 2))
    assert problem is not None and problem.reason == "answer echoes count 4, expected 2"
    problem = check_pdu(b"\x05" + struct.pack(">HH", 7, 0xFF00) + b"\x00", Expected(5, 7))
    assert problem is not None and problem.kind == "malformed"


def test_header_checks_name_what_came_back() -> None:
    assert check_header(1, 5, 1, 5) is None
    assert check_header(7, 5, 1, 5) == "answer from unit 7, expected unit 1"
    assert check_header(1, 9, 1, 5) == "answer has transaction id 9, expected 5"
    assert check_header(7, 0, 1, 0) == "answer from unit 7, expected unit 1"  # RTU
    assert check_header(7, 5, 0, 5) is None  # unit 0: any unit answers


def test_preview_shows_text_as_text_and_bytes_as_hex() -> None:
    assert preview(b"HTTP/1.1 400 Bad Request\r\n") == "'HTTP/1.1 400 Bad Request'..."
    assert preview(b"\x00\x01\xff") == "00 01 ff"
