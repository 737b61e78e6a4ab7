"""Keep asyncua's own log lines about a session that ended out of the gateway's log.

When a server stops, restarts or stops answering, asyncua logs an ERROR with a traceback from
its publish loop ("Publish iteration crashed"), another from `disconnect()` ("close_session
raised during disconnect") and WARNINGs when the gateway closes what is already closed. The
gateway says it once, in one line: the driver raises DeviceUnreachable with the reason and the
runtime logs "<device>: unreachable (...); reconnecting with backoff". These records go to the
driver's logger at DEBUG instead (`--log-level debug` still shows them, without traceback).
Anything else asyncua logs, including these messages for another cause, passes unchanged.
"""

from __future__ import annotations

import asyncio
import logging

from drivers.opcua.reasons import reason

log = logging.getLogger("drivers.opcua.asyncua")

# The loggers asyncua 2.1 uses for these messages (a filter acts on its own logger only).
LOGGERS = ("asyncua.client.ua_session.UaSession", "asyncua.client.ua_client.UaClient",
           "asyncua.client.client")
CRASH_MESSAGES = ("Publish iteration crashed", "close_session raised during disconnect",
                  "close_secure_channel raised during disconnect")
CLOSED_MESSAGES = ("close_session was called but connection is closed",
                   "close_secure_channel was called but connection is closed",
                   "close_session but connection wasn't established")
LINK_FAILURES = (OSError, EOFError, TimeoutError, asyncio.CancelledError)


def is_session_end(message: str, exc: BaseException | None) -> bool:
    """Whether an asyncua record only says that the link to the server is gone."""
    if message.startswith(CLOSED_MESSAGES):
        return True
    return message.startswith(CRASH_MESSAGES) and isinstance(exc, LINK_FAILURES)


class SessionEndFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if not is_session_end(message, exc):
            return True
        log.debug("asyncua: %s%s", message, f" ({reason(exc, typed=True)})" if exc else "")
        return False


_FILTER = SessionEndFilter()


def install() -> None:
    """Add the filter to asyncua's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
