"""The HTTP status server of a running gateway: health, metrics, tags, page."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from tests.integration.test_runtime import ListSink, ScriptedDriver, gateway_config

pytestmark = pytest.mark.integration


async def fetch(port: int, path: str) -> tuple[int, str, bytes]:
    def get() -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()
    return await asyncio.to_thread(get)


async def with_gateway(tmp_path: Path, drivers: list[ScriptedDriver], check: Any) -> None:
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], drivers)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        for _ in range(100):
            server = getattr(gateway, "status_server", None)
            if server is not None and server.port:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        await check(gateway.status_server.port)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_healthz_is_200_when_every_device_answers(tmp_path: Path) -> None:
    async def check(port: int) -> None:
        status, kind, body = await fetch(port, "/healthz")
        assert (status, kind) == (200, "application/json")
        assert json.loads(body) == {"healthy": True, "problems": []}

    await with_gateway(tmp_path, [ScriptedDriver("press", 0.1)], check)


async def test_healthz_is_503_and_names_the_device_that_is_down(tmp_path: Path) -> None:
    async def check(port: int) -> None:
        status, _, body = await fetch(port, "/healthz")
        assert status == 503
        assert json.loads(body)["problems"] == ["device down: connection refused"]

    drivers = [ScriptedDriver("press", 0.1), ScriptedDriver("down", 0.1, down_for=10**6)]
    await with_gateway(tmp_path, drivers, check)


async def test_metrics_export_counters_and_read_latency(tmp_path: Path) -> None:
    async def check(port: int) -> None:
        status, kind, body = await fetch(port, "/metrics")
        text = body.decode()
        assert status == 200 and kind.startswith("text/plain")
        assert 'gateway_device_polls_total{device="press"}' in text
        assert 'gateway_read_seconds_count{device="press"}' in text
        assert 'gateway_buffer_appended_total' in text

    await with_gateway(tmp_path, [ScriptedDriver("press", 0.1)], check)


async def test_api_tags_has_the_latest_value_of_every_tag(tmp_path: Path) -> None:
    driver = ScriptedDriver("press", 0.1)

    async def check(port: int) -> None:
        _, _, body = await fetch(port, "/api/tags")
        [tag] = json.loads(body)
        assert tag["device"] == "press" and tag["tag"] == "counter"
        assert tag["quality"] == "good" and tag["ts"].endswith("Z")
        assert abs(tag["value"] - len(driver.reads)) <= 1
        status, kind, page = await fetch(port, "/")
        assert status == 200 and kind.startswith("text/html") and b"/api/tags" in page
        assert (await fetch(port, "/nope"))[0] == 404

    await with_gateway(tmp_path, [driver], check)
