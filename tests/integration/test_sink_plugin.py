"""A third-party sink (the example package's `jsonl` type) through config, check and run: the
registry finds it by its entry point, it gets its own cursor, and its batches are acknowledged
only once written."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway

pytestmark = pytest.mark.integration


def config_text(tmp_path: Path, archive: Path) -> str:
    return textwrap.dedent(f"""\
        gateway:
          id: sink-plugin
          site: plant
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{enabled: false}}
        sinks:
          archive: {{type: jsonl, path: "{archive}", flush_interval: 0s}}
        devices:
          - name: box
            driver: hoststats
            poll_interval: 100ms
            tags: [{{name: uptime, metric: uptime_s}}]
        """)


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.mark.usefixtures("hoststats_plugin")
async def test_a_plugin_sink_is_built_from_its_type_and_gets_the_readings(
        tmp_path: Path) -> None:
    archive = tmp_path / "archive" / "readings.jsonl"
    gateway = Gateway(parse_config(config_text(tmp_path, archive), env={}))
    assert [type(s).__name__ for s in gateway.state.sinks] == ["JsonLinesSink"]
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(lines(archive)) < 5:
            assert asyncio.get_running_loop().time() < deadline, "no lines in the archive"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
    first = lines(archive)[0]
    assert first["site"] == "plant" and first["device"] == "box" and first["tag"] == "uptime"
    assert isinstance(first["value"], float) and first["quality"] == "good"
    assert gateway.state.buffer is not None


@pytest.mark.usefixtures("hoststats_plugin")
def test_check_validates_a_plugin_sinks_own_keys(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(tmp_path, tmp_path / "a.jsonl").replace(
        "flush_interval: 0s", "flush_interval: 0s, colour: red"))
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode != 0
    assert "sinks.archive.colour: unknown key" in result.stderr
