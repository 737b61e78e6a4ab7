"""A fresh InfluxDB 1.x without the database: the v1 sink says once how to create it, and
`create_database: true` creates it (the demo sets it). Real InfluxDB 1.6.7."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import SinkError
from gateway.models import utc_now
from gateway.sinks.influx import InfluxSink
from tests.fixtures_influx import InfluxV1Server
from tests.integration.test_influx_sink import contexts, reading, running, v1_config

pytestmark = pytest.mark.integration


def fresh_name() -> str:
    return f"fresh_{uuid.uuid4().hex[:8]}"


async def test_a_missing_database_is_explained_once_with_the_command_that_creates_it(
        influxdb_v1: InfluxV1Server, caplog: pytest.LogCaptureFixture) -> None:
    name = fresh_name()
    config = v1_config(influxdb_v1, database=name)
    with caplog.at_level(logging.ERROR, logger="gateway.sinks.influx"):
        async with running(InfluxSink(config, contexts("p"))) as sink:
            for _ in range(3):
                with pytest.raises(SinkError, match=f"database '{name}' not found"):
                    await sink.send([reading("p", "t", 1.0, utc_now())])
    told = [r.getMessage() for r in caplog.records if "Create it once" in r.getMessage()]
    assert len(told) == 1, told
    assert f"-execute 'CREATE DATABASE {name}'" in told[0]
    assert f"curl -XPOST '{influxdb_v1.url}/query'" in told[0]
    assert "create_database: true" in told[0]


async def test_create_database_creates_it_at_start_and_the_first_write_lands(
        influxdb_v1: InfluxV1Server) -> None:
    name = fresh_name()
    config = v1_config(influxdb_v1, database=name, create_database=True)
    ts = utc_now()
    async with running(InfluxSink(config, contexts("p"))) as sink:
        await sink.send([reading("p", "t", 4.5, ts)])
    rows = influxdb_v1.query_raw(f'SELECT t FROM "{name}".."p"')
    assert rows["results"][0]["series"][0]["values"][0][1] == 4.5


async def test_create_database_again_when_it_was_dropped_while_running(
        influxdb_v1: InfluxV1Server) -> None:
    name = fresh_name()
    config = v1_config(influxdb_v1, database=name, create_database=True)
    async with running(InfluxSink(config, contexts("p"))) as sink:
        await sink.send([reading("p", "t", 1.0, utc_now())])
        influxdb_v1.query(f'DROP DATABASE "{name}"')
        await sink.send([reading("p", "t", 2.0, utc_now())])
    rows = influxdb_v1.query_raw(f'SELECT t FROM "{name}".."p"')
    assert [v[1] for v in rows["results"][0]["series"][0]["values"]] == [2.0]


@pytest.fixture
def influxdb_without_telemetry(tmp_path: Path) -> Iterator[InfluxV1Server]:
    """A fresh InfluxDB 1.6.7 that has no `telemetry` database (the fixture creates `other`)."""
    server = InfluxV1Server(tmp_path / "influx", database="other")
    server.start()
    yield server
    server.stop()


def test_the_demo_creates_the_database_names_every_sink_and_does_not_warn(
        influxdb_without_telemetry: InfluxV1Server) -> None:
    server = influxdb_without_telemetry
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "4", "--mqtt-port", "0",
         "--http-port", "0", "--no-live", "--influx-url", server.url, "--influx-api", "v1"],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"influxdb ({server.url}, API v1, database telemetry)" in output
    assert "mqtt (embedded broker at mqtt://127.0.0.1:" in output
    assert "WARNING" not in output and "not found" not in output, output[-3000:]
    server.database = "telemetry"
    assert server.query('SELECT count("cycle_counter") FROM "press-01"')[0]["count"] >= 2
