"""The InfluxDB sink against real servers: InfluxDB 1.6.7 (API v1) and VictoriaMetrics (API v2
through influxdb-client)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from gateway.config import InfluxSinkConfig
from gateway.errors import SinkError
from gateway.metrics import Counters
from gateway.models import Quality, Reading, bad_reading, utc_now
from gateway.sinks import DeviceContext
from gateway.sinks.influx import InfluxSink
from gateway.sinks.line_protocol import timestamp_ns
from tests.fixtures_influx import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    InfluxV1Server,
    VictoriaMetricsServer,
)
from tests.procs import free_port

pytestmark = pytest.mark.integration


def contexts(*devices: str, area: str = "stamping") -> dict[str, DeviceContext]:
    return {d: DeviceContext(gateway="edge-01", site="jeonju", area=area, line="", device=d)
            for d in devices}


def reading(device: str, tag: str, value: Any, ts: datetime,
            quality: Quality = Quality.GOOD) -> Reading:
    return Reading(device=device, tag=tag, value=value, quality=quality, source_ts=ts)


def v1_config(server: InfluxV1Server, **overrides: Any) -> InfluxSinkConfig:
    return InfluxSinkConfig.model_validate(
        {"url": server.url, "api": "v1", "database": server.database, "timeout": "2s",
         **overrides})


@asynccontextmanager
async def running(sink: InfluxSink) -> AsyncIterator[InfluxSink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_v1_write_of_every_value_type_reads_back_exactly(
        influxdb_v1: InfluxV1Server, counters: Counters) -> None:
    ts = utc_now()
    device = "press-types"
    batch = [reading(device, "oil_temperature", 21.53, ts),
             reading(device, "count", -(2**62), ts),
             reading(device, "door_open", True, ts),
             reading(device, "recipe", 'P-17 "dual", C:\\x', ts),
             reading(device, "speed", float("nan"), ts),
             bad_reading(device, "pressure", "timeout", ts=ts)]
    async with running(InfluxSink(v1_config(influxdb_v1), contexts(device), counters)) as sink:
        await sink.send(batch)
        assert sink.connected

    rows = influxdb_v1.query(f'SELECT * FROM "{device}"')
    assert rows == [{"time": timestamp_ns(ts), "gateway": "edge-01", "site": "jeonju",
                     "area": "stamping", "oil_temperature": 21.53, "count": -(2**62),
                     "door_open": True, "recipe": 'P-17 "dual", C:\\x'}]
    types = {row["fieldKey"]: row["fieldType"]
             for row in influxdb_v1.query(f'SHOW FIELD KEYS FROM "{device}"')}
    assert types == {"oil_temperature": "float", "count": "integer", "door_open": "boolean",
                     "recipe": "string"}
    assert counters.get("gateway_sink_sent_total", sink="influxdb") == 4
    assert counters.get("gateway_sink_dropped_total", sink="influxdb", reason="not_finite") == 1


async def test_v1_names_with_separators_arrive_unchanged(influxdb_v1: InfluxV1Server) -> None:
    ts = utc_now()
    device = "line=2,press 3"
    ctx = {device: DeviceContext(gateway="edge 01", site="a=b,c", area='"x"', line="",
                                 device=device)}
    async with running(InfluxSink(v1_config(influxdb_v1), ctx)) as sink:
        await sink.send([reading(device, "oil temp,=degC", 1.5, ts)])

    rows = influxdb_v1.query('SELECT * FROM "line=2,press 3"')
    assert rows == [{"time": timestamp_ns(ts), "gateway": "edge 01", "site": "a=b,c",
                     "area": '"x"', "oil temp,=degC": 1.5}]


async def test_v2_write_to_victoria_metrics_reads_back_numbers_and_ms_timestamps(
        victoria_metrics: VictoriaMetricsServer, counters: Counters) -> None:
    ts = utc_now()
    device = "press-vm"
    config = InfluxSinkConfig.model_validate(
        {"url": victoria_metrics.url, "api": "v2", "token": "any", "org": "factory",
         "bucket": "telemetry", "timeout": "2s"})
    batch = [reading(device, "oil_temperature", 21.5, ts), reading(device, "count", 7, ts),
             reading(device, "door_open", True, ts), reading(device, "recipe", "P-17", ts)]
    async with running(InfluxSink(config, contexts(device), counters)) as sink:
        await sink.send(batch)

    series = victoria_metrics.wait_for_series('{__name__=~"press-vm_.*"}', count=4)
    values = {s["metric"]["__name__"]: (s["values"], s["timestamps"]) for s in series}
    ms = timestamp_ns(ts) // 1_000_000
    assert values == {"press-vm_oil_temperature": ([21.5], [ms]), "press-vm_count": ([7], [ms]),
                      "press-vm_door_open": ([1], [ms]), "press-vm_recipe": ([0], [ms])}
    labels = {k: v for k, v in series[0]["metric"].items() if k != "__name__"}
    assert labels == {"gateway": "edge-01", "site": "jeonju", "area": "stamping"}
    assert counters.get("gateway_sink_sent_total", sink="influxdb") == 4


async def test_field_type_conflict_drops_only_the_bad_reading(
        influxdb_v1: InfluxV1Server, counters: Counters,
        caplog: pytest.LogCaptureFixture) -> None:
    device = "press-conflict"
    start = utc_now()
    async with running(InfluxSink(v1_config(influxdb_v1), contexts(device), counters)) as sink:
        await sink.send([reading(device, "oil_temperature", 20.0, start)])
        batch = [reading(device, "oil_temperature", 20.0 + i, start + timedelta(seconds=i + 1))
                 for i in range(200)]
        bad_ts = start + timedelta(seconds=50)  # in place of the 50th reading
        batch[49] = reading(device, "oil_temperature", "overheat", bad_ts)
        with caplog.at_level(logging.ERROR, logger="gateway.sinks.influx"):
            await sink.send(batch)
        assert sink.connected

    rows = influxdb_v1.query(f'SELECT oil_temperature FROM "{device}"')
    assert len(rows) == 200  # the first reading and 199 of the batch
    assert timestamp_ns(bad_ts) not in {row["time"] for row in rows}
    assert counters.get("gateway_sink_dropped_total", sink="influxdb", reason="rejected") == 1
    assert counters.get("gateway_sink_sent_total", sink="influxdb") == 200
    assert counters.get("gateway_sink_failures_total", sink="influxdb") == 0
    [record] = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert "field type conflict" in record.getMessage()
    assert 'oil_temperature="overheat"' in record.getMessage()


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_server_not_running_raises_sink_error_at_once(api: str,
                                                            counters: Counters) -> None:
    config = InfluxSinkConfig.model_validate(
        {"url": f"http://127.0.0.1:{free_port()}", "api": api, "timeout": "5s"})
    async with running(InfluxSink(config, contexts("p"), counters)) as sink:
        started = time.monotonic()
        with pytest.raises(SinkError, match="unreachable"):
            await sink.send([reading("p", "t", 1.0, utc_now())])
        assert time.monotonic() - started < 3.0  # not the 5 s timeout
        assert not sink.connected
    assert counters.get("gateway_sink_failures_total", sink="influxdb") == 1


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_server_that_never_answers_fails_within_the_timeout(api: str,
                                                                 silent_port: int) -> None:
    config = InfluxSinkConfig.model_validate(
        {"url": f"http://127.0.0.1:{silent_port}", "api": api, "timeout": "500ms"})
    async with running(InfluxSink(config, contexts("p"))) as sink:
        started = time.monotonic()
        with pytest.raises(SinkError):
            await sink.send([reading("p", "t", 1.0, utc_now())])
        assert 0.4 < time.monotonic() - started < 5.0  # the 500 ms, not the default 10 s


async def test_sink_recovers_after_the_database_restarts(
        private_influxdb_v1: InfluxV1Server, counters: Counters) -> None:
    server = private_influxdb_v1
    device = "press-restart"
    t0 = utc_now()
    async with running(InfluxSink(v1_config(server), contexts(device), counters)) as sink:
        await sink.send([reading(device, "t", 1.0, t0)])
        server.stop()
        with pytest.raises(SinkError):
            await sink.send([reading(device, "t", 2.0, t0 + timedelta(seconds=1))])
        assert not sink.connected
        server.start()
        # The sink's kept-alive connection died with the server: it must reconnect by itself.
        await sink.send([reading(device, "t", 2.0, t0 + timedelta(seconds=1))])
        assert sink.connected

    assert [row["t"] for row in server.query(f'SELECT t FROM "{device}"')] == [1.0, 2.0]
    assert counters.get("gateway_sink_failures_total", sink="influxdb") == 1
    assert counters.get("gateway_sink_sent_total", sink="influxdb") == 2


async def test_wrong_v1_credentials_raise_without_dropping(
        influxdb_v1_auth: InfluxV1Server, counters: Counters) -> None:
    device = "press-auth"
    ts = utc_now()
    wrong = v1_config(influxdb_v1_auth, username=ADMIN_USER, password="wrong")
    async with running(InfluxSink(wrong, contexts(device), counters)) as sink:
        with pytest.raises(SinkError, match="credentials") as raised:
            await sink.send([reading(device, "t", 1.0, ts)])
    assert "wrong" not in str(raised.value)
    assert counters.get("gateway_sink_dropped_total") == 0

    right = v1_config(influxdb_v1_auth, username=ADMIN_USER, password=ADMIN_PASSWORD)
    async with running(InfluxSink(right, contexts(device), counters)) as sink:
        await sink.send([reading(device, "t", 1.0, ts)])
    assert influxdb_v1_auth.query(f'SELECT t FROM "{device}"')[0]["t"] == 1.0


async def test_missing_database_is_a_configuration_error(influxdb_v1: InfluxV1Server) -> None:
    config = v1_config(influxdb_v1, database="no_such_db")
    async with running(InfluxSink(config, contexts("p"))) as sink:
        with pytest.raises(SinkError, match="no_such_db"):
            await sink.send([reading("p", "t", 1.0, utc_now())])


async def test_v2_api_against_influxdb_1_6_names_the_fix(influxdb_v1: InfluxV1Server) -> None:
    config = InfluxSinkConfig.model_validate({"url": influxdb_v1.url, "api": "v2"})
    async with running(InfluxSink(config, contexts("p"))) as sink:
        with pytest.raises(SinkError, match="api: v1"):
            await sink.send([reading("p", "t", 1.0, utc_now())])


async def test_a_batch_of_only_bad_readings_writes_nothing(influxdb_v1: InfluxV1Server,
                                                           counters: Counters) -> None:
    async with running(InfluxSink(v1_config(influxdb_v1), contexts("p"), counters)) as sink:
        await asyncio.wait_for(sink.send([bad_reading("p", "t", "down")]), 5)
    assert counters.get("gateway_sink_sent_total") == 0
    assert counters.get("gateway_sink_dropped_total") == 0


async def test_arrays_are_skipped_counted_and_said_once_per_tag(
        influxdb_v1: InfluxV1Server, counters: Counters, caplog: pytest.LogCaptureFixture) -> None:
    ts = utc_now()
    batch = [reading("arr", "axes", [1.0, 2.0], ts), reading("arr", "speed", 5.0, ts)]
    with caplog.at_level(logging.INFO, logger="gateway.sinks.influx"):
        async with running(InfluxSink(v1_config(influxdb_v1), contexts("arr"),
                                      counters)) as sink:
            await sink.send(batch)
            await sink.send(batch)
    assert influxdb_v1.query('SELECT * FROM "arr"') == [
        {"time": timestamp_ns(ts), "gateway": "edge-01", "site": "jeonju", "area": "stamping",
         "speed": 5.0}]
    assert counters.get("gateway_sink_dropped_total", sink="influxdb", reason="array") == 2
    [told] = [r for r in caplog.records if "arr/axes is an array" in r.getMessage()]
    assert told.levelno == logging.INFO  # by design, not a fault: no warning at start


async def test_influxdb_reads_escaped_backslashes_as_line_protocol_documents(
        private_influxdb_v1: InfluxV1Server) -> None:
    """The escaping model the unit tests assume, checked against the real server."""
    server = private_influxdb_v1
    device = 'a\\"\\=\\,\\ \\\\'
    ctx = {device: DeviceContext(gateway="\\", site="s\\=\\,", area='\\"', line="x\r\ny",
                                 device=device)}
    ts = utc_now()
    async with running(InfluxSink(v1_config(server), ctx)) as sink:
        await sink.send([reading(device, 'k\\"\\=\\', '\\"\n\\', ts)])

    assert server.query("SHOW MEASUREMENTS") == [{"name": 'a/"/=/,/ \\/'}]
    assert server.query("SHOW FIELD KEYS") == [{"fieldKey": 'k/"/=/', "fieldType": "string"}]
    [row] = server.query('SELECT * FROM /.*/')
    assert row == {"time": timestamp_ns(ts), "gateway": "/", "site": "s/=/,", "area": '\\"',
                   "line": "x y", 'k/"/=/': '\\"\\n\\'}
