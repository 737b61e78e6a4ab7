"""One-line reasons for the exceptions of an OPC UA session (pure: no I/O).

`f"{exc or 'timed out'}"` never falls back: an exception instance is always true, and
`TimeoutError()` from `asyncio.wait_for` has no text, which published `"request failed: "`.
Every message of the driver, the session and `discover` that shows an exception goes through
`reason()`, so an exception without text is named by its type.
"""

from __future__ import annotations

import errno
import socket

# What a plant engineer can act on, for the socket errors that mean "cannot get there":
# `[Errno 111] Connect call failed ('10.0.0.7', 4840)` says it to a programmer only.
PLAIN_ERRNO = {
    errno.ECONNREFUSED: "connection refused: nothing listens on that port (is the server "
                        "running, and is the port right?)",
    errno.EHOSTUNREACH: "no route to the host (is it on this network? check the IP address "
                        "and the cable)",
    errno.ENETUNREACH: "network unreachable (is this machine on the PLC's network?)",
}

NO_TEXT = {
    TimeoutError: "timed out",
    ConnectionResetError: "connection reset by the server",
    ConnectionAbortedError: "connection aborted",
    BrokenPipeError: "connection closed by the server",
    EOFError: "connection closed by the server",
    ConnectionError: "connection closed",
}


def reason(exc: BaseException, timeout: float | None = None, typed: bool = False) -> str:
    """The exception's own text (on one line), or for one without text what it means and its
    type name: `timed out after 2s (TimeoutError)`, `connection closed by the server
    (EOFError)`. `typed`: the type name leads a text too (`KeyError: 'x'`), for the
    unexpected failures whose type is the clue."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    plain = _plain_socket_error(exc)
    if plain:
        return f"{plain}; {text}" if text else plain
    if text:
        return f"{name}: {text}" if typed else text
    meaning = next((m for kind, m in NO_TEXT.items() if isinstance(exc, kind)), "")
    if meaning and isinstance(exc, TimeoutError) and timeout is not None:
        meaning += f" after {timeout:g}s"
    return f"{meaning} ({name})" if meaning else name


def _plain_socket_error(exc: BaseException) -> str | None:
    if isinstance(exc, socket.gaierror):
        return "unknown host name (check its spelling, or use the IP address)"
    if isinstance(exc, OSError) and exc.errno in PLAIN_ERRNO:
        return PLAIN_ERRNO[exc.errno]
    return None
