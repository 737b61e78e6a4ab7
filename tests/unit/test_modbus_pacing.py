"""Wire time of one RTU exchange, as the pacing simulator waits it out (pure)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.busload import exchange_seconds
from simulators.modbus.pacing import frame_bytes, sleep_until, wire_seconds


def test_ten_registers_at_115200_baud() -> None:
    assert frame_bytes(3, 10) == (8, 25)
    assert wire_seconds(3, 10, 115200) == pytest.approx(33 * 10 / 115200 + 2 * 0.00175)


def test_bits_are_packed_eight_to_a_byte() -> None:
    assert frame_bytes(1, 17) == (8, 8)


@given(st.sampled_from(["holding", "input", "coil", "discrete"]), st.integers(1, 125),
       st.sampled_from([9600, 19200, 38400, 115200]))
def test_agrees_with_the_drivers_bus_estimate(table: str, count: int, baudrate: int) -> None:
    function = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[table]
    assert wire_seconds(function, count, baudrate) == pytest.approx(
        exchange_seconds(table, count, baudrate))


class FakeClock:
    """A clock that moves on 0.5 ms each time it is read."""

    def __init__(self) -> None:
        self.now, self.reads = 100.0, 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += 0.0005
        return self.now


async def test_sleep_until_returns_at_the_deadline_not_before() -> None:
    clock = FakeClock()
    await sleep_until(clock.now + 0.01, clock)
    assert clock.now >= 100.01
    assert clock.now < 100.01 + 0.001  # it stops at the first read past the deadline


async def test_sleep_until_a_past_deadline_returns_at_once() -> None:
    clock = FakeClock()
    await sleep_until(clock.now - 1, clock)
    assert clock.reads == 2  # the coarse check and one look at the deadline


async def test_sleep_until_on_the_real_clock_is_never_early() -> None:
    deadline = time.monotonic() + 0.006
    await sleep_until(deadline)
    assert time.monotonic() >= deadline
