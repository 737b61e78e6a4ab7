"""The rich live view shows what the running gateway holds."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from gateway.config import parse_config
from gateway.live import live_view
from gateway.logs import configure_logging
from gateway.runtime import Gateway
from tests.integration.test_runtime import ListSink, ScriptedDriver, gateway_config

pytestmark = pytest.mark.integration


async def test_live_view_shows_devices_values_quality_and_sinks(tmp_path: Path) -> None:
    drivers = [ScriptedDriver("press", 0.05), ScriptedDriver("down", 0.05, down_for=10**6)]
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], drivers)
    output = io.StringIO()
    console = Console(file=output, width=140, force_terminal=False, color_system=None)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    await asyncio.wait_for(asyncio.gather(
        gateway.run(stop), live_view(gateway.state, stop, lambda: ["footer text"], console, 0.2,
                                     log_path=tmp_path / "live.log")), 15)
    screen = output.getvalue()
    assert "press" in screen and "answering" in screen and "not answering" in screen
    assert "connection refused" in screen
    assert "counter" in screen and "good" in screen and "bad" in screen
    assert "list" in screen and "footer text" in screen


async def test_log_records_go_to_a_file_and_the_bottom_line_not_into_the_table(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    drivers = [ScriptedDriver("down", 0.05, down_for=10**6)]
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], drivers)
    output = io.StringIO()
    console = Console(file=output, width=100, height=24, force_terminal=False, color_system=None)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    configure_logging("info")  # a StreamHandler on stderr, as `gateway demo` has
    try:
        await asyncio.wait_for(asyncio.gather(
            gateway.run(stop), live_view(gateway.state, stop, console=console, refresh=0.2,
                                         log_path=tmp_path / "live.log")), 15)
    finally:
        logging.getLogger().handlers.clear()
    assert "down: unreachable" in (tmp_path / "live.log").read_text()
    assert "last log: WARNING" in output.getvalue()
    assert "unreachable" not in capfd.readouterr().err  # nothing written between the redraws
