"""How long a request and its answer take on a real RTU line (pure): a pty pair carries bytes
at once, so a simulator pacing its answers waits this long before answering, as a 115,200-baud
RS-485 bus would make the gateway wait. Each byte is 10 bits (8N1); each frame ends with 3.5
characters of silence (1.75 ms above 19,200 baud, as the spec fixes it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

BITS_PER_CHAR = 10


def frame_bytes(function_code: int, count: int) -> tuple[int, int]:
    """(request, answer) bytes of one RTU exchange; `count` registers or bits read/written."""
    if function_code in (1, 2):
        return 8, 5 + (count + 7) // 8
    if function_code in (3, 4):
        return 8, 5 + 2 * count
    if function_code == 15:
        return 9 + (count + 7) // 8, 8
    if function_code == 16:
        return 9 + 2 * count, 8
    return 8, 8


def wire_seconds(function_code: int, count: int, baudrate: int) -> float:
    """Both frames on the wire plus their end-of-frame silences."""
    request, answer = frame_bytes(function_code, count)
    gap = 0.00175 if baudrate > 19200 else 3.5 * BITS_PER_CHAR / baudrate
    return (request + answer) * BITS_PER_CHAR / baudrate + 2 * gap


# asyncio's timers wake up to about 1.3 ms late (epoll takes whole milliseconds, rounded up;
# measured on this box with a 6 ms sleep), a fifth of a 115,200-baud exchange. The last
# stretch before a deadline is waited out yielding to the loop instead.
TIMER_SLACK = 0.002


async def sleep_until(deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Return at `deadline` (a `clock()` time), not a timer's millisecond later: a coarse sleep
    to `TIMER_SLACK` before it, then yields to the event loop (other tasks run) until it."""
    coarse = deadline - TIMER_SLACK - clock()
    if coarse > 0:
        await asyncio.sleep(coarse)
    while clock() < deadline:
        await asyncio.sleep(0)
