"""The status page in a real headless Chromium: simulator values in the table, quality colours,
refresh without a reload, the sinks' state, and a screenshot that is not blank."""

from __future__ import annotations

import asyncio
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.runtime import Gateway
from simulators.modbus import ModbusSimulator
from tests.procs import free_port

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (tests/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager must not try to download anything.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


TABLE_JS = """
return Array.from(document.querySelectorAll('#tags tbody tr')).map(row => ({
  class: row.className,
  cells: Array.from(row.cells).map(cell => cell.innerText.trim()),
  colour: getComputedStyle(row.querySelector('td.quality')).backgroundColor,
}));
"""


def png_is_not_blank(data: bytes) -> bool:
    """A PNG with more than a handful of distinct pixel rows (no Pillow needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    width = struct.unpack(">I", data[16:20])[0]
    stride = 1 + width * 4 if data[25] == 6 else 1 + width * 3
    rows = {raw[i + 1:i + stride] for i in range(0, len(raw), stride)}
    return len(rows) > 20


async def test_status_page_shows_live_simulator_values(browser: Any, tmp_path: Path) -> None:
    http_port = free_port()
    async with ModbusSimulator(port=0, seed=2) as simulator:
        config = parse_config(f"""
gateway:
  id: page-test
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  http: {{listen: "127.0.0.1:{http_port}"}}
devices:
  - name: packer-03
    driver: modbus
    poll_interval: 200ms
    connection: {{host: 127.0.0.1, port: {simulator.port}, unit_id: 3}}
    tags:
      - {{name: speed, table: holding, address: 4, type: float32, byte_order: little,
         word_order: little, unit: packs/min}}
      - {{name: operating_seconds, table: input, address: 0, type: uint64,
         word_order: little, unit: s}}
  - name: offline-plc
    driver: modbus
    poll_interval: 200ms
    connection: {{host: 127.0.0.1, port: {free_port()}, unit_id: 1, timeout: 200ms}}
    tags:
      - {{name: temperature, table: holding, address: 0, type: int16}}
sinks:
  mqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}
""", env={})
        gateway = Gateway(config)
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.sleep(1.0)
            url = f"http://127.0.0.1:{http_port}/"
            await asyncio.to_thread(browser.get, url)

            def table() -> list[dict[str, Any]]:
                # One script call reads the whole table at once: the page re-renders its rows on
                # every refresh, so element handles kept across calls go stale.
                return browser.execute_script(TABLE_JS)  # type: ignore[no-any-return]

            def rows() -> dict[str, list[str]]:
                return {" ".join(r["cells"][:2]): r["cells"] for r in table()}

            await asyncio.sleep(1.5)
            first = await asyncio.to_thread(rows)
            assert set(first) == {"packer-03 speed", "packer-03 operating_seconds",
                                  "offline-plc temperature"}
            speed = float(first["packer-03 speed"][2])
            # The models keep moving (a slow sine): the page shows a value of the last polls.
            assert speed == pytest.approx(simulator.value_of(3, "speed"), abs=0.5)
            assert first["packer-03 speed"][3] == "packs/min"
            assert first["packer-03 speed"][4] == "good"
            assert first["offline-plc temperature"][4] == "bad"

            colours = {r["class"]: r["colour"] for r in await asyncio.to_thread(table)}
            assert colours["good"] != colours["bad"]

            # The simulator moves on; the page follows without a reload.
            await asyncio.sleep(2.5)
            later = await asyncio.to_thread(rows)
            assert int(later["packer-03 operating_seconds"][2]) > \
                int(first["packer-03 operating_seconds"][2])
            sinks = await asyncio.to_thread(
                browser.execute_script, "return document.querySelector('#sinks tbody').innerText")
            assert "mqtt no" in " ".join(sinks.split())
            health = await asyncio.to_thread(
                browser.execute_script, "return document.getElementById('health').innerText")
            health = " ".join(health.split())
            assert health.startswith("degraded") and "offline-plc" in health

            screenshot = tmp_path / "status-page.png"
            await asyncio.to_thread(browser.save_screenshot, str(screenshot))
            assert png_is_not_blank(screenshot.read_bytes())
            shutil.copy(screenshot, Path("/tmp/status-page.png"))
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
