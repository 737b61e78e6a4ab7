import logging
from datetime import UTC, datetime

import pytest

from drivers.opcua.notifications import DROPPED, NotificationBuffer
from gateway.metrics import Counters
from gateway.models import Reading

pytestmark = pytest.mark.unit


def reading(i: int) -> Reading:
    return Reading(device="cnc", tag="t", value=i, source_ts=datetime(2026, 1, 1, tzinfo=UTC))


def test_past_max_size_the_oldest_go_and_are_counted() -> None:
    counters = Counters()
    buffer = NotificationBuffer("cnc", 3, counters)
    for i in range(5):
        buffer.append(reading(i))
    assert [r.value for r in buffer.drain()] == [2, 3, 4]
    assert counters.get(DROPPED, device="cnc") == 2
    assert len(buffer) == 0


def test_one_warning_per_overflow_episode(caplog: pytest.LogCaptureFixture) -> None:
    buffer = NotificationBuffer("cnc", 1, Counters())
    caplog.set_level(logging.WARNING)

    def overflow() -> None:
        for i in range(3):
            buffer.append(reading(i))
        buffer.drain()

    overflow()
    overflow()  # the same episode: nothing drained cleanly in between
    assert len(caplog.records) == 1
    buffer.drain()  # a drain with nothing dropped ends the episode
    overflow()
    assert len(caplog.records) == 2
    assert "cnc" in caplog.records[0].getMessage()
