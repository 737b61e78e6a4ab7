"""pymodbus framers that check every answer against its request before pymodbus decodes it.

pymodbus 3.16's own framers skip an answer with the wrong unit or transaction id with an ERROR
log line and let the request time out ("No response received"), take an answer with the wrong
function code or byte count as good, and raise out of `data_received` on an answer they cannot
decode (asyncio logs a traceback and drops the connection). These framers never raise: they tell
the connection's `AnswerWatch` what came back instead, and it fails the request at once (an
answer that is ours but wrong) or remembers it for the timeout's reason (an answer skipped as
someone else's).
"""

from __future__ import annotations

import logging
from typing import Protocol

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.framer.base import FramerBase
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.modbus.answers import AnswerProblem, Expected, check_header, check_pdu, preview

MAX_MBAP_LENGTH = 254  # unit id + a PDU of at most 253 bytes


class AnswerWatch(Protocol):
    """The connection's view of the request in flight."""

    expected: Expected | None

    def fail(self, problem: AnswerProblem) -> None:
        """The answer to the request in flight is wrong: fail the request now."""

    def skip(self, what: str) -> None:
        """Something that is not the answer came back (the reason if the request times out)."""


class CheckedSocketFramer(FramerSocket):
    """Modbus TCP (MBAP header: transaction id, protocol id 0, length, unit)."""

    def __init__(self, decoder: DecodePDU, watch: AnswerWatch) -> None:
        super().__init__(decoder)
        self.watch = watch

    def handleFrame(self, data: bytes, exp_devid: int,
                    exp_tid: int) -> tuple[int, ModbusPDU | None]:
        return handle_frame(self, data, exp_devid, exp_tid, self.watch)

    def is_junk(self, data: bytes) -> bool:
        """An MBAP header no Modbus TCP device sends (pymodbus waits on it forever)."""
        if len(data) < self.MIN_SIZE:
            return False
        length = int.from_bytes(data[4:6], "big")
        return data[2:4] != b"\x00\x00" or not 2 <= length <= MAX_MBAP_LENGTH


class CheckedRtuFramer(FramerRTU):
    """Modbus RTU (unit, PDU, CRC; no transaction id)."""

    def __init__(self, decoder: DecodePDU, watch: AnswerWatch) -> None:
        super().__init__(decoder)
        self.watch = watch

    def handleFrame(self, data: bytes, exp_devid: int,
                    exp_tid: int) -> tuple[int, ModbusPDU | None]:
        return handle_frame(self, data, exp_devid, exp_tid, self.watch)

    def is_junk(self, data: bytes) -> bool:
        return False  # pymodbus's RTU framer hunts through garbage for a frame with a good CRC


CheckedFramer = CheckedSocketFramer | CheckedRtuFramer


def handle_frame(framer: CheckedFramer, data: bytes, exp_devid: int, exp_tid: int,
                 watch: AnswerWatch) -> tuple[int, ModbusPDU | None]:
    """What pymodbus's `FramerBase.handleFrame` does, with every answer checked: (bytes used,
    the answer or None). Never raises: an exception here would kill the connection."""
    try:
        return _handle(framer, data, exp_devid, exp_tid, watch)
    except Exception as exc:  # a decoder bug must not reach asyncio's data_received
        watch.fail(AnswerProblem("malformed", f"malformed answer: {exc} ({preview(data)})"))
        return len(data), None


def _handle(framer: CheckedFramer, data: bytes, exp_devid: int, exp_tid: int,
            watch: AnswerWatch) -> tuple[int, ModbusPDU | None]:
    expected = watch.expected
    if expected is None:
        return len(data), None  # nothing asked: a late answer to a request given up on
    used = 0
    while used < len(data):
        rest = data[used:]
        if framer.is_junk(rest):
            watch.fail(AnswerProblem("malformed", f"not a Modbus answer: {preview(rest)}"))
            return len(data), None
        size, unit, transaction, pdu = framer.decode(rest)
        if not size:
            watch.skip(f"an incomplete answer: {preview(rest)}")
            return used, None
        used += size
        if not pdu:
            watch.skip(f"a garbled answer: {preview(rest[:size])}")
            continue
        header = check_header(unit, transaction, exp_devid, exp_tid)
        if header is not None:
            if transaction and transaction == exp_tid:  # our answer, from another unit
                watch.fail(AnswerProblem("mismatch", header))
                return len(data), None
            watch.skip(header)
            continue
        return used, _decode(framer, pdu, unit, transaction, expected, watch)
    return used, None


def _decode(framer: FramerBase, pdu: bytes, unit: int, transaction: int, expected: Expected,
            watch: AnswerWatch) -> ModbusPDU | None:
    problem = check_pdu(pdu, expected)
    answer = framer.decoder.decode(pdu) if problem is None else None
    if answer is None:
        watch.fail(problem or AnswerProblem("malformed",
                                            f"malformed answer: {preview(pdu)}"))
        return None
    answer.dev_id, answer.transaction_id = unit, transaction
    return answer


class _OneLine(logging.Filter):
    """pymodbus appends its last 20 frames to every ERROR line and logs what the driver reports
    itself (a timeout, a skipped answer): keep its first line, drop the ones the driver says."""

    REPORTED = ("No response received", "request ask for", "Invalid Modbus protocol id",
                "Unable to decode", "ERROR: received pdu without")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(self.REPORTED):
            return False
        record.msg, record.args = message.split("\n", 1)[0], None
        return True


_FILTER = _OneLine()


def quiet_pymodbus() -> None:
    """Install the one-line filter on pymodbus's logger (idempotent)."""
    logger = logging.getLogger("pymodbus.logging")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
