"""Real time-series databases for tests: Debian's InfluxDB 1.6.7 and VictoriaMetrics 1.79.

Both run on free 127.0.0.1 ports in pytest tmp dirs and are stopped at the end of the session.
The server objects can be stopped and started again on the same port and data directory, so
that fault tests can take a database away and bring it back (use the function-scoped
`private_influxdb_v1` for that, so the shared one stays up for the other tests).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import Service, free_port, wait_for

INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret-admin"

_INFLUXD_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false

[ifql]
  enabled = false

[logging]
  level = "warn"
"""


def _http(method: str, url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _ok(url: str) -> bool:
    try:
        return 200 <= _http("GET", url, timeout=1.0)[0] < 300
    except OSError:
        return False


class InfluxV1Server:
    """InfluxDB 1.6.7 (`influxd -config FILE`) with the database `telemetry`.

    With `auth=True` the HTTP API requires credentials; the admin user is
    `ADMIN_USER`/`ADMIN_PASSWORD` (created before auth is needed, as InfluxDB allows for the
    first user) and `query()`/`write()` use it.
    """

    def __init__(self, workdir: Path, auth: bool = False, database: str = "telemetry") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.auth = auth
        self.port = free_port()
        rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "influxdb.conf"
        config.write_text(_INFLUXD_CONFIG.format(rpc_port=rpc_port, root=workdir,
                                                 http_port=self.port, auth=str(auth).lower()))
        self.service = Service("influxd", [INFLUXD, "-config", str(config)], self.port, workdir)
        self._created = False

    def start(self) -> None:
        self.service.start(ready=lambda: _ok(f"{self.url}/ping"), timeout=30.0)
        if not self._created:
            if self.auth:
                self.query(f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' "
                           "WITH ALL PRIVILEGES")
            self.query(f'CREATE DATABASE "{self.database}"')
            self._created = True

    def stop(self) -> None:
        self.service.stop()

    def kill(self) -> None:
        self.service.kill()

    def _headers(self) -> dict[str, str]:
        if not self.auth:
            return {}
        token = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def query_raw(self, influxql: str) -> dict[str, Any]:
        """POST /query with `epoch=ns`, so times come back as exact integer nanoseconds."""
        params = urllib.parse.urlencode({"db": self.database, "q": influxql, "epoch": "ns"})
        status, body = _http("POST", f"{self.url}/query", params.encode(),
                             {"Content-Type": "application/x-www-form-urlencoded",
                              **self._headers()})
        if status != 200:
            raise RuntimeError(f"influxql {influxql!r} -> {status}: {body!r}")
        result: dict[str, Any] = json.loads(body)
        for statement in result.get("results", []):
            if "error" in statement:
                raise RuntimeError(f"influxql {influxql!r}: {statement['error']}")
        return result

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """The rows of every series as dicts (column -> value; a series' tags merged in)."""
        rows: list[dict[str, Any]] = []
        for statement in self.query_raw(influxql).get("results", []):
            for series in statement.get("series", []):
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(series.get("tags") or {})
                    rows.append(row)
        return rows

    def write(self, lines: list[str]) -> None:
        """Write line protocol directly (test setup), failing on anything but 204."""
        params = urllib.parse.urlencode({"db": self.database, "precision": "ns"})
        status, body = _http("POST", f"{self.url}/write?{params}", "\n".join(lines).encode(),
                             self._headers())
        if status != 204:
            raise RuntimeError(f"write -> {status}: {body!r}")


class VictoriaMetricsServer:
    """VictoriaMetrics 1.79 (single node), which accepts InfluxDB writes on `/write` (v1) and
    `/api/v2/write` (v2; any token, org and bucket are accepted).

    How it names series from line protocol: `measurement,t1=a,t2=b f1=1,f2=2 ts` becomes the two
    series `measurement_f1{t1="a",t2="b"}` and `measurement_f2{t1="a",t2="b"}` (separator
    `-influxMeasurementFieldSeparator`, default `_`); the v1 `db` parameter becomes a `db` label
    (the v2 bucket does not become a label). Values are float64: integers come back as numbers,
    booleans as 1/0, and string fields are stored as 0 - assert only numbers here.
    Timestamps are kept in milliseconds (nanoseconds are truncated).
    Recently written samples are only searchable after `/internal/force_flush`, which the
    helpers below call first.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [VICTORIA_METRICS, f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={workdir / 'data'}", "-retentionPeriod=100y",
                "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"]
        self.service = Service("victoria-metrics", argv, self.port, workdir)

    def start(self) -> None:
        self.service.start(ready=lambda: _ok(f"{self.url}/health"), timeout=30.0)

    def stop(self) -> None:
        self.service.stop()

    def flush(self) -> None:
        status, body = _http("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise RuntimeError(f"force_flush -> {status}: {body!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """`/api/v1/export?match[]=...`: one dict per series, with `metric` (labels, including
        `__name__`), `values` and `timestamps` (ms)."""
        self.flush()
        params = urllib.parse.urlencode({"match[]": match})
        status, body = _http("GET", f"{self.url}/api/v1/export?{params}")
        if status != 200:
            raise RuntimeError(f"export {match!r} -> {status}: {body!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def query(self, promql: str, time_s: float | None = None) -> list[dict[str, Any]]:
        """An instant query; the `result` list of the Prometheus-style answer."""
        self.flush()
        params = {"query": promql}
        if time_s is not None:
            params["time"] = str(time_s)
        status, body = _http("GET", f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise RuntimeError(f"query {promql!r} -> {status}: {body!r}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def wait_for_series(self, match: str, count: int,
                        timeout: float = 10.0) -> list[dict[str, Any]]:
        """Export `match` until at least `count` series exist (ingestion is asynchronous)."""
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            nonlocal found
            found = self.export(match)
            return len(found) >= count

        wait_for(enough, timeout, f"{count} series matching {match}", interval=0.2)
        return found


@pytest.fixture(scope="session")
def influxdb_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1Server]:
    """A shared InfluxDB 1.6.7; tests use their own measurement names to stay independent."""
    server = InfluxV1Server(tmp_path_factory.mktemp("influxdb-v1"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_influxdb_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1Server]:
    """An InfluxDB 1.6.7 of the test's own, for tests that stop and restart it."""
    server = InfluxV1Server(tmp_path_factory.mktemp("influxdb-v1-private"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxdb_v1_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1Server]:
    """An InfluxDB 1.6.7 with `auth-enabled = true` (admin user ADMIN_USER/ADMIN_PASSWORD)."""
    server = InfluxV1Server(tmp_path_factory.mktemp("influxdb-v1-auth"), auth=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    server = VictoriaMetricsServer(tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    yield server
    server.stop()
