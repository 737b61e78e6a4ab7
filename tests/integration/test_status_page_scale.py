"""The status page with 10,000 tags in a real headless Chromium: only the rows on screen are in
the table (and get sparklines), scrolling brings the others, and a refresh stays fast."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse_config
from gateway.http_server import StatusServer
from gateway.models import good_reading
from gateway.state import GatewayState
from tests.integration.test_status_page_browser import (  # noqa: F401 (a fixture)
    browser,
    eventually,
)

pytestmark = pytest.mark.integration
TAGS = 10_000
CONFIG = """
gateway: {id: scale, buffer: {path: %s}}
sinks: {mqtt: {url: "mqtt://127.0.0.1:1"}}
devices:
  - {name: plc, driver: modbus, connection: {host: 127.0.0.1, port: 5020},
     tags: [{name: t, table: holding, address: 0, type: int16}]}
"""
ROWS_JS = """
const rows = document.querySelectorAll('#tags tbody tr');
return {rows: rows.length, count: document.getElementById('count').innerText,
        sparks: document.querySelectorAll('#tags tbody td.spark .uplot canvas').length,
        first: rows.length ? rows[0].cells[1].innerText : null,
        last: rows.length ? rows[rows.length - 1].cells[1].innerText : null};
"""


def fill(state: GatewayState) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    for second in range(20):
        ts = start + timedelta(seconds=second)
        state.tags.update([good_reading("plc", f"tag{n:05d}", n + second % 7, ts)
                           for n in range(TAGS)])


async def test_ten_thousand_tags_render_only_the_rows_in_view(
        browser: Any, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    state = GatewayState(parse_config(CONFIG % (tmp_path / "b.db"), env={}), [])
    fill(state)
    server = StatusServer(state, "127.0.0.1:0")
    await server.start()
    try:
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{server.port}/")
        page = await eventually(browser, ROWS_JS, lambda p: p["count"] == f"{TAGS} tags"
                                and p["sparks"] > 0)
        assert 0 < page["rows"] < 200, "only a screenful of rows, not 10,000"
        assert page["first"] == "tag00000" and page["sparks"] == page["rows"]
        took = await asyncio.to_thread(browser.execute_script, """
            const start = performance.now(); renderTags(); return performance.now() - start;""")
        print(f"renderTags with {TAGS} tags: {took:.0f} ms")
        assert took < 1000, f"a refresh of 10,000 tags took {took:.0f} ms"
        await asyncio.to_thread(browser.execute_script,
                                "window.scrollTo(0, document.body.scrollHeight)")
        bottom = await eventually(browser, ROWS_JS, lambda p: p["last"] == f"tag{TAGS - 1:05d}"
                                  and p["sparks"] == p["rows"])
        assert bottom["rows"] < 200
        started = time.monotonic()
        await asyncio.to_thread(browser.execute_script, "return 1")
        assert time.monotonic() - started < 5, "the page stays responsive"
    finally:
        await server.close()
