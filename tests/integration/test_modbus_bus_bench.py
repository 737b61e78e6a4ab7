"""The bus bench's measurement on a real socat pty pair, briefly: every reading good, and the
paced line never faster than the wire allows."""

from __future__ import annotations

import pytest

from bench.modbus_bus import measure

pytestmark = pytest.mark.integration


async def test_a_short_paced_bus_run(rtu_pty_pair: tuple[str, str]) -> None:
    gateway_end, plc_end = rtu_pty_pair
    result = await measure(3, 115200, 1.0, gateway_end, plc_end)
    assert result["bad_readings"] == 0
    assert result["fewest_polls_of_a_unit"] >= 1
    assert result["readings_per_s"] > 0
    assert result["cycle_ms"] >= result["wire_minimum_cycle_ms"]
    assert 0 < result["bus_utilisation"] <= 1.0


async def test_a_short_run_with_the_simulator_in_its_own_process(
        rtu_pty_pair: tuple[str, str]) -> None:
    gateway_end, plc_end = rtu_pty_pair
    result = await measure(2, 115200, 1.0, gateway_end, plc_end, separate=True)
    assert result["separate"] is True
    assert result["bad_readings"] == 0
    assert result["fewest_polls_of_a_unit"] >= 1
    assert result["cycle_ms"] >= result["wire_minimum_cycle_ms"]
