"""The HTTP status server of a running gateway: health, metrics, tags, page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

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


async def eventually(check: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    """Run an async assertion until it passes (the box may be busy); re-raise after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path, drivers: list[ScriptedDriver]
                          ) -> AsyncIterator[tuple[Gateway, int]]:
    """A gateway with its status server on a free loopback port, stopped at exit."""
    gateway = Gateway(parse_config(gateway_config(tmp_path), env={}), [ListSink()], drivers)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not (gateway.status_server and gateway.status_server.port):
            assert time.monotonic() < deadline and not task.done(), "status server never started"
            await asyncio.sleep(0.05)
        yield gateway, gateway.status_server.port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def with_gateway(tmp_path: Path, drivers: list[ScriptedDriver],
                       check: Callable[[int], Awaitable[None]]) -> None:
    async with running_gateway(tmp_path, drivers) as (_, port):
        await eventually(lambda: check(port))


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


async def test_api_status_has_each_devices_health_and_last_good_read_age(tmp_path: Path) -> None:
    drivers = [ScriptedDriver("press", 0.1), ScriptedDriver("down", 0.1, down_for=10**6)]

    async def check(port: int) -> None:
        status, kind, body = await fetch(port, "/api/status")
        assert (status, kind) == (200, "application/json")
        answer = json.loads(body)
        devices = {d["name"]: d for d in answer["devices"]}
        press, down = devices["press"], devices["down"]
        assert press["healthy"] and press["error"] is None
        assert 0 <= press["last_ok_age_s"] < 5
        # Driver and interval come from the config, which lists no device here.
        assert press["driver"] is None and press["poll_interval_s"] is None
        assert not down["healthy"] and down["error"] == "connection refused"
        assert down["last_ok_age_s"] is None, "never answered"
        assert answer["gateway"] == "test" and answer["sinks"][0]["name"] == "list"

    await with_gateway(tmp_path, drivers, check)


async def test_unknown_path_is_404_a_wrong_method_405_and_head_has_no_body(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, [ScriptedDriver("press", 0.1)]) as (_, port):
        assert (await fetch(port, "/nope"))[0] == 404

        def head_and_delete() -> tuple[int, bytes, int]:
            head = urllib.request.Request(f"http://127.0.0.1:{port}/api/tags", method="HEAD")
            with urllib.request.urlopen(head, timeout=5) as answer:
                status, body = answer.status, answer.read()
            delete = urllib.request.Request(f"http://127.0.0.1:{port}/api/tags", method="DELETE")
            try:
                urllib.request.urlopen(delete, timeout=5)
            except urllib.error.HTTPError as error:
                return status, body, error.code
            return status, body, 200

        assert await asyncio.to_thread(head_and_delete) == (200, b"", 405)
