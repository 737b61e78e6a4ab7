"""Does an answer answer its request? (pure)

pymodbus 3.16 matches an answer to its request by transaction id only: an answer with another
function code (an FC4 answer to an FC3 request), too many registers, or a write's echo of
another address is taken as it comes. These checks run on the answer's bytes before pymodbus
decodes them (see framing.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

READS = (1, 2, 3, 4)
BIT_READS = (1, 2)
SINGLE_WRITES = (5, 6)
MULTIPLE_WRITES = (15, 16)

ProblemKind = Literal["mismatch", "malformed"]


@dataclass(frozen=True)
class Expected:
    """What the answer to one request must look like.

    `count`: registers or bits read, or registers/coils written (function 15, 16);
    `value`: the value a single write (function 5, 6) sends, which its answer echoes.
    """

    function_code: int
    address: int
    count: int = 1
    value: int | None = None


@dataclass(frozen=True)
class AnswerProblem:
    """Why an answer does not answer its request. `kind` is the error counter's label:
    `mismatch` (a well-formed answer to something else), `malformed` (not a valid answer)."""

    kind: ProblemKind
    reason: str


def check_pdu(pdu: bytes, expected: Expected) -> AnswerProblem | None:
    """The problem of `pdu` (function code and data, no header) as the answer to `expected`,
    or None if it answers it. An exception answer to the same function is an answer."""
    if not pdu:
        return AnswerProblem("malformed", "malformed answer: empty")
    function = pdu[0]
    if function & 0x80:
        if function & 0x7F != expected.function_code:
            return _mismatch(f"answer has function code {function & 0x7F} (an exception), "
                             f"expected {expected.function_code}")
        if len(pdu) != 2:
            return _malformed(f"exception answer of {len(pdu)} bytes, expected 2")
        return None
    if function != expected.function_code:
        return _mismatch(f"answer has function code {function}, expected "
                         f"{expected.function_code}")
    if function in READS:
        return _check_read(pdu, expected)
    if function in SINGLE_WRITES or function in MULTIPLE_WRITES:
        return _check_echo(pdu, expected)
    return None


def _check_read(pdu: bytes, expected: Expected) -> AnswerProblem | None:
    if len(pdu) < 2:
        return _malformed("no byte count")
    if expected.function_code in BIT_READS:
        wanted, what = (expected.count + 7) // 8, f"{expected.count} bits"
    else:
        wanted, what = 2 * expected.count, f"{expected.count} registers"
    if pdu[1] != wanted:
        return _malformed(f"byte count {pdu[1]}, expected {wanted} ({what})")
    if len(pdu) - 2 != wanted:
        return _malformed(f"{len(pdu) - 2} data bytes, its byte count says {wanted}")
    return None


def _check_echo(pdu: bytes, expected: Expected) -> AnswerProblem | None:
    if len(pdu) != 5:
        return _malformed(f"{len(pdu)} bytes, a write's answer has 5")
    address, field = struct.unpack(">HH", pdu[1:5])
    if address != expected.address:
        return _mismatch(f"answer echoes address {address}, expected {expected.address}")
    if expected.function_code in SINGLE_WRITES:
        if expected.value is not None and field != expected.value:
            return _mismatch(f"answer echoes value {field}, expected {expected.value}")
    elif field != expected.count:
        return _mismatch(f"answer echoes count {field}, expected {expected.count}")
    return None


def check_header(unit: int, transaction: int, expected_unit: int,
                 expected_transaction: int) -> str | None:
    """What is wrong with an answer's unit and transaction id (0 expected: not checked; RTU
    has no transaction id), or None."""
    if expected_transaction and transaction and transaction != expected_transaction:
        return f"answer has transaction id {transaction}, expected {expected_transaction}"
    if expected_unit and unit != expected_unit:
        return f"answer from unit {unit}, expected unit {expected_unit}"
    return None


def preview(data: bytes, limit: int = 24) -> str:
    """Bytes as a person can read them: text when they are printable, else hex."""
    head = data[:limit]
    more = "..." if len(data) > limit else ""
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return repr(head.decode("ascii")) + more
    return head.hex(" ") + more


def _mismatch(reason: str) -> AnswerProblem:
    return AnswerProblem("mismatch", reason)


def _malformed(detail: str) -> AnswerProblem:
    return AnswerProblem("malformed", f"malformed answer: {detail}")
