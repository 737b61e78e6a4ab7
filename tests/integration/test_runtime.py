"""The supervisor's scheduling and failure handling, with in-process drivers and sinks
(the protocol drivers and real sinks have their own integration tests)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from drivers.base import DeviceConfig, Driver
from gateway.config import parse_config
from gateway.errors import DeviceUnreachable, SinkError
from gateway.models import Quality, Reading, utc_now
from gateway.runtime import Gateway
from gateway.sinks import Delivery, Sink

pytestmark = pytest.mark.integration


class ScriptedDriver(Driver):
    """A device whose behaviour the test scripts: down for the first `down_for` connects,
    `read_delay` seconds per read, and a counter value that increments per read."""

    def __init__(self, name: str, interval: float, down_for: int = 0,
                 read_delay: float = 0.0) -> None:
        super().__init__(DeviceConfig(name=name, driver="scripted", poll_interval=interval))
        self.down_for = down_for
        self.read_delay = read_delay
        self.connects = 0
        self.reads: list[float] = []
        self.fail_next_read = False

    def tag_names(self) -> list[str]:
        return ["counter"]

    async def connect(self) -> None:
        self.connects += 1
        if self.connects <= self.down_for:
            raise DeviceUnreachable("connection refused", self.name)

    async def read(self) -> list[Reading]:
        if self.fail_next_read:
            self.fail_next_read = False
            raise DeviceUnreachable("timeout", self.name)
        self.reads.append(time.monotonic())
        await asyncio.sleep(self.read_delay)
        return [Reading(device=self.name, tag="counter", value=len(self.reads),
                        source_ts=utc_now())]

    async def close(self) -> None:
        pass


class ListSink(Sink):
    name = "list"
    delivery = Delivery(batch_size=100)
    flush_interval = 0.0

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__({})
        self.received: list[Reading] = []
        self.fail_first = fail_first
        self.calls = 0

    async def start(self) -> None:
        pass

    async def send(self, readings: Sequence[Reading]) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise SinkError("broker down", self.name)
        self.received.extend(readings)

    async def close(self) -> None:
        pass

    def of(self, device: str) -> list[Reading]:
        return [r for r in self.received if r.device == device]


def gateway_config(tmp_path: Path) -> str:
    return f"""
gateway:
  id: test
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 2s
  http: {{listen: "127.0.0.1:0"}}
sinks:
  mqtt:
    url: mqtt://127.0.0.1:1883
"""


async def run_for(gateway: Gateway, seconds: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await asyncio.wait_for(gateway.run(stop), seconds + 10)


async def test_slow_device_does_not_delay_a_fast_one(tmp_path: Path) -> None:
    fast = ScriptedDriver("fast", 0.05)
    slow = ScriptedDriver("slow", 0.05, read_delay=0.5)
    sink = ListSink()
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [sink], [fast, slow])
    await run_for(gateway, 1.0)
    assert len(fast.reads) >= 15
    assert len(slow.reads) <= 3
    assert len(sink.of("fast")) == len(fast.reads)


async def test_polls_follow_a_fixed_grid_without_drift(tmp_path: Path) -> None:
    driver = ScriptedDriver("grid", 0.1, read_delay=0.03)
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], [driver])
    await run_for(gateway, 1.55)
    offsets = [(t - driver.reads[0]) % 0.1 for t in driver.reads]
    # Each poll starts on the 100 ms grid, however long the read takes (no accumulated drift).
    assert all(min(o, 0.1 - o) < 0.03 for o in offsets), offsets
    assert 14 <= len(driver.reads) <= 17


async def test_device_down_at_start_does_not_hold_up_others(tmp_path: Path) -> None:
    down = ScriptedDriver("down", 0.05, down_for=1000)
    up = ScriptedDriver("up", 0.05)
    sink = ListSink()
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [sink], [down, up])
    await run_for(gateway, 0.8)
    assert len(sink.of("up")) >= 10
    bad = sink.of("down")
    assert len(bad) == 1, "an outage is reported once, not on every reconnect attempt"
    assert bad[0].quality == Quality.BAD and bad[0].error == "connection refused"
    assert down.connects >= 2, "it keeps trying to reconnect"


async def test_device_recovers_and_reports_each_outage_once(tmp_path: Path) -> None:
    driver = ScriptedDriver("plc", 0.05, down_for=2)
    sink = ListSink()
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [sink], [driver])

    async def fail_later() -> None:
        await asyncio.sleep(1.8)
        driver.fail_next_read = True

    async with asyncio.TaskGroup() as group:
        group.create_task(fail_later())
        group.create_task(run_for(gateway, 3.0))
    qualities = [r.quality for r in sink.of("plc")]
    assert qualities[0] == Quality.BAD
    assert qualities.count(Quality.BAD) == 2
    assert qualities[-1] == Quality.GOOD
    assert driver.connects == 4


async def test_sink_failure_is_retried_from_the_buffer_without_loss(tmp_path: Path) -> None:
    driver = ScriptedDriver("plc", 0.02)
    sink = ListSink(fail_first=2)
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [sink], [driver])
    await run_for(gateway, 2.5)
    values = [r.value for r in sink.received]
    assert values == list(range(1, len(driver.reads) + 1))


async def test_stop_flushes_the_backlog_then_returns(tmp_path: Path) -> None:
    driver = ScriptedDriver("plc", 0.01)
    sink = ListSink()
    sink.delivery = Delivery(batch_size=5)
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [sink], [driver])
    started = time.monotonic()
    await run_for(gateway, 0.5)
    assert time.monotonic() - started < 3
    assert [r.value for r in sink.received] == list(range(1, len(driver.reads) + 1))


async def test_replay_after_an_outage_respects_the_rate_limit(tmp_path: Path) -> None:
    driver = ScriptedDriver("plc", 0.005)
    sink = ListSink(fail_first=1)
    sink.name = "mqtt"
    sink.delivery = Delivery(batch_size=10, max_rate=100)
    config = parse_config(gateway_config(tmp_path), env={})
    sent_at: list[float] = []
    original_send = sink.send

    async def timed_send(readings: Sequence[Reading]) -> None:
        await original_send(readings)
        sent_at.append(time.monotonic())

    sink.send = timed_send  # type: ignore[method-assign]
    await run_for(Gateway(config, [sink], [driver]), 2.0)
    # About 100 readings/s arrive; however big the backlog after the failed first send,
    # batches of 10 go out no faster than one per 100 ms.
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(sent_at) >= 5
    assert min(gaps) >= 0.09, gaps



class ChangingRefusal(ScriptedDriver):
    """Refused by the network first, then by the server's security, forever."""

    async def connect(self) -> None:
        self.connects += 1
        reason = "connection refused" if self.connects <= 2 else "server rejected the login"
        raise DeviceUnreachable(reason, self.name)


async def test_a_new_reason_for_an_outage_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    driver = ChangingRefusal("plc", 0.05)
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], [driver])
    with caplog.at_level(logging.WARNING, logger="gateway.supervisor"):
        await run_for(gateway, 5.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.supervisor"]
    assert driver.connects >= 4
    assert sum("connection refused" in m for m in messages) == 1
    assert sum("now: server rejected the login" in m for m in messages) == 1
