"""Reloads that arrive together (ten POST /api/reload after one edit, or SIGHUPs in a burst)
apply once: every device ends up with exactly one task, and a stop still completes."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.runtime import Gateway
from tests.procs import free_port

pytestmark = pytest.mark.integration


def config_text(tmp_path: Path, interval: str) -> str:
    return textwrap.dedent(f"""\
        gateway:
          id: reload-race
          buffer: {{path: {tmp_path / 'buffer.db'}}}
          http: {{enabled: false}}
        sinks:
          mqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}
        devices:
          - name: box-a
            driver: hoststats
            poll_interval: {interval}
            tags: [{{name: load, metric: load1}}]
        """)


def device_tasks(name: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == f"device:{name}" and not t.done()]


async def wait_until(condition: object, seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_ten_concurrent_reloads_leave_one_poller_and_stop_completes(
        tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path, "200ms"))
    gateway = Gateway(load_config(path), config_path=str(path))
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    await wait_until(lambda: len(device_tasks("box-a")) == 1, 20)
    path.write_text(config_text(tmp_path, "300ms"))  # box-a changed: it must restart once
    results = await asyncio.gather(*(gateway.reload_from_file() for _ in range(10)))
    changed = [r["changes"]["changed"] for r in results]
    assert changed.count(["box-a"]) == 1 and changed.count([]) == 9
    await asyncio.sleep(0)  # let the started task be scheduled
    assert len(device_tasks("box-a")) == 1
    assert gateway.devices is not None and list(gateway.devices.drivers) == ["box-a"]
    assert gateway.devices.drivers["box-a"].config.poll_interval == 0.3
    stop.set()
    await asyncio.wait_for(runner, 30)
    assert device_tasks("box-a") == []


async def test_a_reload_after_the_stop_began_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path, "200ms"))
    gateway = Gateway(load_config(path), config_path=str(path))
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    await wait_until(lambda: len(device_tasks("box-a")) == 1, 20)
    path.write_text(config_text(tmp_path, "300ms"))
    stop.set()
    reloads = [asyncio.create_task(gateway.reload_from_file()) for _ in range(5)]
    await asyncio.wait_for(runner, 30)
    await asyncio.gather(*reloads)
    assert device_tasks("box-a") == []
