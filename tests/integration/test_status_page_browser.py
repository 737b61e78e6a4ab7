"""The status page in a real headless Chromium: device cards, simulator values in the table (bad
first), quality colours, sorting and filtering, refresh without a reload, the sinks' state, the
token prompt, and a screenshot that is not blank."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.http_access import AccessPolicy
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


CARDS_JS = """
return Array.from(document.querySelectorAll('#devices .device')).map(card => ({
  name: card.querySelector('.name').innerText, down: card.classList.contains('down'),
  state: card.querySelector('.state').innerText, last: card.querySelector('.last').innerText,
  meta: card.querySelector('.meta').innerText, error: card.querySelector('.error').innerText,
  kpi: card.querySelectorAll('.kpi[data-device]').length,
}));
"""
TOKEN = "page-test-token-0123456789"


def plant_config(tmp_path: Path, http_port: int, simulator_port: int) -> str:
    return f"""
gateway:
  id: page-test
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  http: {{listen: "127.0.0.1:{http_port}", token: {TOKEN}}}
devices:
  - name: packer-03
    driver: modbus
    poll_interval: 200ms
    connection: {{host: 127.0.0.1, port: {simulator_port}, unit_id: 3}}
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
"""


@contextlib.asynccontextmanager
async def plant(tmp_path: Path) -> AsyncIterator[tuple[Gateway, ModbusSimulator, str]]:
    """A gateway polling one simulated packer and one PLC that is not there."""
    async with ModbusSimulator(port=0, seed=2) as simulator:
        # Port 0: the status server's port is read back, so no other socket can take it first
        gateway = Gateway(parse_config(plant_config(tmp_path, 0, simulator.port), env={}))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            deadline = time.monotonic() + 20
            while not (gateway.status_server and gateway.status_server.port):
                assert time.monotonic() < deadline and not task.done(), "no status server"
                await asyncio.sleep(0.05)
            yield gateway, simulator, f"http://127.0.0.1:{gateway.status_server.port}/"
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)


async def eventually(browser: Any, script: str, accept: Callable[[Any], bool],
                     timeout: float = 30.0) -> Any:
    """Run `script` in the page until `accept` takes its result (the page refreshes every
    second and the box may be busy); fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(browser.execute_script, script)
        if accept(result):
            return result
        assert time.monotonic() < deadline, f"the page never showed it; last: {result!r}"
        await asyncio.sleep(0.2)


def rows_of(table: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {" ".join(r["cells"][:2]): r["cells"] for r in table}


ALL_TAGS = {"packer-03 speed", "packer-03 operating_seconds", "offline-plc temperature"}


def full_table(table: list[dict[str, Any]]) -> bool:
    rows = rows_of(table)
    return set(rows) == ALL_TAGS and all(r[4] for r in rows.values()) and \
        rows["packer-03 speed"][4] == "good"


async def test_status_page_shows_live_simulator_values(browser: Any, tmp_path: Path) -> None:
    async with plant(tmp_path) as (_, simulator, url):
        await asyncio.to_thread(browser.get, url)
        table = await eventually(browser, TABLE_JS, full_table)
        first = rows_of(table)
        speed = float(first["packer-03 speed"][2])
        # The models keep moving (a slow sine): the page shows a value of the last polls.
        assert speed == pytest.approx(simulator.value_of(3, "speed"), abs=0.5)
        assert first["packer-03 speed"][3] == "packs/min"
        assert first["offline-plc temperature"][4] == "bad"
        assert table[0]["cells"][:2] == ["offline-plc", "temperature"], "bad tags first"
        colours = {r["class"]: r["colour"] for r in table}
        assert colours["good"] != colours["bad"]

        # The simulator moves on; the page follows without a reload.
        seconds = int(first["packer-03 operating_seconds"][2])
        await eventually(browser, TABLE_JS, lambda t: full_table(t) and int(
            rows_of(t)["packer-03 operating_seconds"][2]) > seconds)
        sinks = await asyncio.to_thread(
            browser.execute_script, "return document.querySelector('#sinks tbody').innerText")
        assert "mqtt no" in " ".join(sinks.split())
        health = await asyncio.to_thread(
            browser.execute_script, "return document.getElementById('health').innerText")
        health = " ".join(health.split())
        assert health.startswith("degraded") and "offline-plc" in health


async def test_device_cards_show_health_last_read_and_error_down_first(
        browser: Any, tmp_path: Path) -> None:
    async with plant(tmp_path) as (_, _simulator, url):
        await asyncio.to_thread(browser.get, url)
        cards = await eventually(browser, CARDS_JS, lambda c: len(c) == 2 and c[0]["error"]
                                 and c[1]["state"] == "healthy")
        down, packer = cards
        assert (down["name"], down["down"], down["state"]) == ("offline-plc", True, "down")
        assert down["last"] == "no good read since the start"
        assert "cannot connect to 127.0.0.1:" in down["error"]
        assert (packer["name"], packer["down"], packer["error"]) == ("packer-03", False, "")
        seconds_ago = float(packer["last"].removeprefix("last good read ").split(" s ago")[0])
        assert 0 <= seconds_ago < 5
        assert packer["meta"] == "modbus \u00b7 every 0.2 s"
        assert [c["kpi"] for c in cards] == [1, 1], "each card keeps a place for its KPIs"
        # The cards are above the tag table, and the page links to the raw endpoints.
        order = await asyncio.to_thread(browser.execute_script, """
            const cards = document.getElementById('devices');
            const tags = document.getElementById('tags');
            return [cards.compareDocumentPosition(tags) & Node.DOCUMENT_POSITION_FOLLOWING,
                    Array.from(document.querySelectorAll('nav a')).map(a => a.pathname)];""")
        assert order[0] and {"/metrics", "/healthz"} <= set(order[1])


async def test_tag_table_sorts_by_column_and_filters(browser: Any, tmp_path: Path) -> None:
    async with plant(tmp_path) as (_, _simulator, url):
        await asyncio.to_thread(browser.get, url)
        await eventually(browser, TABLE_JS, full_table)

        def tag_column(table: list[dict[str, Any]]) -> list[str]:
            return [r["cells"][1] for r in table]

        click = "document.querySelector('#tags th[data-key=tag]').click(); return 1"
        await asyncio.to_thread(browser.execute_script, click)
        await eventually(browser, TABLE_JS, lambda t: tag_column(t) == [
            "operating_seconds", "speed", "temperature"])
        await asyncio.to_thread(browser.execute_script, click)
        await eventually(browser, TABLE_JS, lambda t: tag_column(t) == [
            "temperature", "speed", "operating_seconds"])
        sort = await asyncio.to_thread(browser.execute_script, "return document.querySelector("
                                       "'#tags th[data-key=tag]').getAttribute('aria-sort')")
        assert sort == "descending"

        filter_box = await asyncio.to_thread(browser.find_element, "id", "filter")
        await asyncio.to_thread(filter_box.send_keys, "packer")
        await eventually(browser, TABLE_JS, lambda t: tag_column(t) == [
            "speed", "operating_seconds"])
        count = await asyncio.to_thread(
            browser.execute_script, "return document.getElementById('count').innerText")
        assert count == "2 of 3 tags"
        await asyncio.to_thread(filter_box.clear)
        await asyncio.to_thread(filter_box.send_keys, "bad")
        await eventually(browser, TABLE_JS, lambda t: tag_column(t) == ["temperature"])

        await asyncio.to_thread(browser.set_window_size, 1280, 900)
        await asyncio.to_thread(filter_box.clear)
        await asyncio.to_thread(filter_box.send_keys, " ")  # all rows again, bad first
        await eventually(browser, TABLE_JS, lambda t: len(t) == 3)
        screenshot = tmp_path / "status-page.png"
        await asyncio.to_thread(browser.save_screenshot, str(screenshot))
        assert png_is_not_blank(screenshot.read_bytes())
        shutil.copy(screenshot, Path("/tmp/status-page.png"))


async def test_page_asks_for_the_token_when_the_gateway_needs_one(
        browser: Any, tmp_path: Path) -> None:
    """The rules of a network listen (the test server binds loopback only)."""
    async with plant(tmp_path) as (gateway, _simulator, url):
        assert gateway.status_server is not None
        gateway.status_server.policy = AccessPolicy("0.0.0.0", TOKEN)
        await asyncio.to_thread(browser.get, url)
        await eventually(browser, "return document.getElementById('health').innerText",
                         lambda text: text == "token needed")
        token_box = await asyncio.to_thread(browser.find_element, "id", "token")
        await asyncio.to_thread(token_box.send_keys, "wrong-token-0123456789\n")
        await eventually(browser, "return document.getElementById('login-error').innerText",
                         lambda text: text == "wrong token")
        await asyncio.to_thread(token_box.clear)
        await asyncio.to_thread(token_box.send_keys, TOKEN + "\n")
        await eventually(browser, TABLE_JS, full_table)
        hidden = await asyncio.to_thread(
            browser.execute_script, "return document.getElementById('login').hidden")
        assert hidden is True
        charting = await asyncio.to_thread(browser.execute_script, "return typeof uPlot")
        assert charting == "function"  # the vendored library loads without the token


REASONS = {0: "running", 1: "no material", 2: "changeover", 3: "no operator", 11: "jam",
           12: "overload"}


async def test_an_enumeration_shows_its_text_next_to_the_number(
        browser: Any, tmp_path: Path) -> None:
    """A Modbus state code reads `0 running` on the page, not a bare `0` (issue 15, item 3)."""
    async with ModbusSimulator(port=0, seed=2) as simulator:
        text = f"""
gateway:
  id: enum-test
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  http: {{listen: "127.0.0.1:0"}}
devices:
  - name: packer-03
    driver: modbus
    poll_interval: 200ms
    connection: {{host: 127.0.0.1, port: {simulator.port}, unit_id: 3}}
    tags:
      - {{name: stop_reason, table: holding, address: 10, type: uint16,
         enum: {{0: running, 1: no material, 2: changeover, 3: no operator, 11: jam,
                12: overload}}}}
sinks:
  mqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}
"""
        gateway = Gateway(parse_config(text, env={}))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            deadline = time.monotonic() + 20
            while not (gateway.status_server and gateway.status_server.port):
                assert time.monotonic() < deadline and not task.done(), "no status server"
                await asyncio.sleep(0.05)
            port = gateway.status_server.port
            await asyncio.to_thread(browser.get, f"http://127.0.0.1:{port}/")
            table = await eventually(browser, TABLE_JS, lambda t: len(t) == 1 and
                                     t[0]["cells"][4] == "good")
            label = await asyncio.to_thread(browser.execute_script, "return document"
                                            ".querySelector('#tags tbody td.value .enum')"
                                            ".innerText")
            number = table[0]["cells"][2].removesuffix(label)
            assert int(number) in REASONS and label == REASONS[int(number)], table[0]["cells"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
