"""Reasons for exceptions without text, and which asyncua records count as a session's end."""

import errno
import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.opcua.quiet import SessionEndFilter, is_session_end
from drivers.opcua.reasons import reason

pytestmark = pytest.mark.unit


def test_a_timeout_without_text_says_timed_out_and_its_type() -> None:
    assert reason(TimeoutError()) == "timed out (TimeoutError)"
    assert reason(TimeoutError(), timeout=2.0) == "timed out after 2s (TimeoutError)"
    assert reason(TimeoutError(), timeout=0.25) == "timed out after 0.25s (TimeoutError)"


def test_connection_errors_without_text_name_the_most_specific_meaning() -> None:
    assert reason(ConnectionResetError()) == "connection reset by the server (ConnectionResetError)"
    assert reason(EOFError()) == "connection closed by the server (EOFError)"
    assert reason(ConnectionError()) == "connection closed (ConnectionError)"


def test_an_unknown_exception_without_text_is_named_by_its_type() -> None:
    class PlcHiccup(Exception):
        pass

    assert reason(PlcHiccup()) == "PlcHiccup"
    assert reason(PlcHiccup(), typed=True) == "PlcHiccup"


def test_a_text_is_kept_on_one_line_and_typed_on_request() -> None:
    assert reason(OSError("Connect call failed\n  ('127.0.0.1', 1)")) == (
        "Connect call failed ('127.0.0.1', 1)")
    assert reason(KeyError("x"), typed=True) == "KeyError: 'x'"


@given(st.sampled_from([TimeoutError, OSError, ConnectionError, EOFError, ValueError,
                        RuntimeError, BrokenPipeError]),
       st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e4)))
def test_a_reason_is_never_empty_and_never_multi_line(kind: type[Exception],
                                                      timeout: float | None) -> None:
    text = reason(kind(), timeout)
    assert text.strip() and "\n" not in text
    assert kind.__name__ in text


def test_the_end_of_a_session_is_recognised_only_for_link_failures() -> None:
    assert is_session_end("Publish iteration crashed; retrying in 1s",
                          ConnectionError("Connection is closed"))
    assert is_session_end("close_session raised during disconnect; continuing teardown",
                          TimeoutError())
    assert is_session_end("close_session was called but connection is closed", None)
    assert not is_session_end("Publish iteration crashed; retrying in 1s", KeyError("x"))
    assert not is_session_end("Error parsing notification from server", OSError())


def _record(message: str, exc: BaseException | None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("asyncua.client.ua_session.UaSession", logging.ERROR, __file__, 1,
                             message, None, info)


def test_the_filter_drops_session_end_noise_and_keeps_everything_else(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="drivers.opcua.asyncua")
    keep = SessionEndFilter()
    assert not keep.filter(_record("Publish iteration crashed; retrying in 1s",
                                   ConnectionError("Connection is closed")))
    assert keep.filter(_record("Publish iteration crashed; retrying in 1s", ValueError("bug")))
    assert "Connection is closed" in caplog.text  # still there at debug, without traceback


def test_cannot_get_there_is_said_in_plain_words_keeping_the_original() -> None:
    refused = OSError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 4999)")
    text = reason(refused)
    assert text.startswith("connection refused: nothing listens on that port")
    assert "Connect call failed ('127.0.0.1', 4999)" in text
    assert reason(ConnectionRefusedError(errno.ECONNREFUSED, "x")).startswith("connection refused")
    assert reason(OSError(errno.EHOSTUNREACH, "No route to host")).startswith("no route")
    assert reason(socket.gaierror(-2, "Name or service not known")).startswith("unknown host")
    assert reason(OSError(errno.EACCES, "Permission denied")) == "[Errno 13] Permission denied"
