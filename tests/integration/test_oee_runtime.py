"""Edge KPIs through the running gateway: a simulated press over Modbus TCP, its `oee:` figures
published as readings of the device every `kpi_interval`, and resumed after a restart from the
buffer's database."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.models import Reading
from gateway.runtime import Gateway
from simulators.modbus import ModbusSimulator
from tests.integration.test_runtime import ListSink

pytestmark = pytest.mark.integration


def press_config(tmp_path: Path, port: int) -> str:
    return textwrap.dedent(f"""\
        gateway:
          id: oee-test
          timezone: Europe/Berlin
          kpi_interval: 300ms
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{enabled: false}}
        sinks:
          mqtt: {{url: "mqtt://127.0.0.1:1"}}
        devices:
          - name: press-01
            driver: modbus
            poll_interval: 100ms
            connection: {{host: 127.0.0.1, port: {port}, unit_id: 1}}
            oee:
              running: {{tag: running}}
              total_count: cycle_counter
              reject_count: reject_counter
              ideal_cycle_time: 2s
            tags:
              - {{name: running, table: holding, address: 0, type: bool, bit: 0}}
              - {{name: cycle_counter, table: holding, address: 2, type: uint32}}
              - {{name: reject_counter, table: holding, address: 4, type: uint16}}
        """)


def latest(sink: ListSink, tag: str) -> Reading | None:
    found = [r for r in sink.received if r.tag == tag]
    return found[-1] if found else None


async def run_until(gateway: Gateway, sink: ListSink, condition: object, seconds: float) -> None:
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition(sink):  # type: ignore[operator]
            assert asyncio.get_running_loop().time() < deadline, "no KPI figures in time"
            assert not runner.done(), runner.exception()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


def run_seconds(sink: ListSink) -> float:
    reading = latest(sink, "oee_run_seconds")
    return float(reading.value) if reading is not None and reading.value is not None else 0.0


async def test_oee_figures_are_readings_of_the_device_and_resume_after_a_restart(
        tmp_path: Path, modbus_simulator: ModbusSimulator) -> None:
    config = parse_config(press_config(tmp_path, modbus_simulator.port), env={})
    first = ListSink()
    first.name = "mqtt"
    await run_until(Gateway(config, [first]), first, lambda s: run_seconds(s) >= 1.0, 30)
    shift = latest(first, "oee_shift")
    assert shift is not None and str(shift.value).endswith(" day")
    availability = latest(first, "oee_availability")
    assert availability is not None and availability.value is not None
    assert 0.9 <= float(availability.value) <= 1.0  # the frozen press runs the whole time
    assert {"oee", "oee_performance", "oee_quality", "oee_total_count", "oee_planned_seconds",
            "oee_unknown_seconds"} <= {r.tag for r in first.received}
    before = run_seconds(first)

    second = ListSink()
    second.name = "mqtt"
    await run_until(Gateway(config, [second]), second,
                    lambda s: any(r.tag == "oee_run_seconds" for r in s.received), 30)
    resumed = next(r for r in second.received if r.tag == "oee_run_seconds")
    assert resumed.value is not None and float(resumed.value) >= before


def test_an_oee_block_naming_a_missing_or_non_integer_tag_is_a_config_error(
        tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    text = press_config(tmp_path, 502).replace("total_count: cycle_counter",
                                               "total_count: running")
    text = text.replace("reject_count: reject_counter", "reject_count: no_such_tag")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    problems = {p.path: p.message for p in caught.value.problems}
    assert "not bool" not in str(problems)
    assert "integer type" in problems["devices[0].oee.total_count"]
    assert "no tag named 'no_such_tag'" in problems["devices[0].oee.reject_count"]
