"""The InfluxDB sink: line protocol over HTTP, API v2 (influxdb-client) or v1 (`POST /write`).

Blocking HTTP runs in a worker thread (`asyncio.to_thread`): influxdb-client's async client
needs aiohttp, which is not a dependency, and its batching write API never raises, which would
break the buffer's at-least-once contract, so the SYNCHRONOUS write API is used.

What the far side says decides what happens to a batch:
- 2xx: delivered.
- no answer (refused, timeout, reset), 5xx, 429: `SinkError`, the caller retries later.
- 401/403 (credentials), 404 (database, bucket or org missing): `SinkError` too, with a message
  naming the setting to fix; data is never dropped for a configuration mistake. A missing v1
  database is explained once (how to create it); with `create_database: true` the sink creates
  it at start, and again if it disappears.
- any other 4xx (a field type conflict, an invalid field name like `time`, a line too long):
  the batch is bisected until the rejected lines are isolated; the rest is written, each
  rejected line is logged with the server's message and dropped (counted), so that one bad
  line never blocks the sink. InfluxDB 1.x answers a field type conflict with
  `400 partial write` after storing the other points: re-writing them while bisecting is
  harmless (same series and timestamp overwrite).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import logging
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.config import InfluxSinkConfig
from gateway.errors import SinkError
from gateway.metrics import COUNTERS, Counters
from gateway.models import Reading
from gateway.sinks import Delivery, DeviceContext, Sink, SinkEnvironment, SinkSettings
from gateway.sinks.line_protocol import to_lines

log = logging.getLogger(__name__)

MAX_LOGGED_REJECTIONS = 10  # per batch; the rest is summed up in one line


@dataclass(frozen=True)
class Answer:
    """The server's HTTP status and its error message (empty on success)."""

    status: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Unreachable(Exception):
    """No HTTP answer at all: refused, timed out, reset."""


class Writer(Protocol):
    """Posts one body of lines; blocking (called in a worker thread)."""

    def post(self, body: bytes) -> Answer: ...

    def close(self) -> None: ...


def _error_message(body: bytes | str) -> str:
    """InfluxDB's `{"error": ...}` (1.x) or `{"message": ...}` (2.x), else the raw text."""
    text = (body.decode("utf-8", "replace") if isinstance(body, bytes) else body).strip()
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(text)
        return str(data.get("error") or data.get("message") or text)
    return text[:500]


class V1Writer:
    """`POST {url}/write?db=&rp=&precision=ns` through one kept-alive http.client connection."""

    def __init__(self, config: InfluxSinkConfig) -> None:
        parts = urllib.parse.urlsplit(config.url)
        params = {"db": config.database, "precision": "ns"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        self.path = f"{parts.path.rstrip('/')}/write?{urllib.parse.urlencode(params)}"
        self.query_path = f"{parts.path.rstrip('/')}/query"
        self.database = config.database
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.username:
            password = config.password.get_secret_value() if config.password else ""
            basic = base64.b64encode(f"{config.username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.https = parts.scheme == "https"
        self.timeout = config.timeout
        self.ssl_context = ssl.create_default_context() if self.https else None
        if self.ssl_context is not None and not config.verify_ssl:
            self.ssl_context.check_hostname = False
            self.ssl_context.verify_mode = ssl.CERT_NONE
        self.conn: http.client.HTTPConnection | None = None
        self.last_body = b""

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post(self, body: bytes, path: str | None = None,
             content_type: str | None = None) -> Answer:
        reused = self.conn is not None
        try:
            return self._post_once(body, path, content_type)
        except TimeoutError as exc:  # not retried: the timeout bounds the whole attempt
            self.close()
            raise Unreachable(f"timed out after {self.timeout}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if not reused:
                raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        # A kept-alive connection the server has closed meanwhile (a restart, an idle
        # timeout) fails on first use: one more try on a fresh connection.
        try:
            return self._post_once(body, path, content_type)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc

    def create_database(self) -> Answer:
        """`CREATE DATABASE` (a no-op when it exists); InfluxQL errors come back as a 200 with
        an `error` per statement, returned here as a 400."""
        quoted = self.database.replace("\\", "\\\\").replace('"', '\\"')
        form = urllib.parse.urlencode({"q": f'CREATE DATABASE "{quoted}"'}).encode()
        answer = self.post(form, self.query_path, "application/x-www-form-urlencoded")
        if answer.ok and self.last_body:
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                for result in json.loads(self.last_body).get("results", []):
                    if "error" in result:
                        return Answer(400, str(result["error"]))
        return answer

    def _post_once(self, body: bytes, path: str | None = None,
                   content_type: str | None = None) -> Answer:
        if self.conn is None:
            self.conn = self._connect()
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        self.conn.request("POST", path or self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        self.last_body = data
        if response.will_close:
            self.close()
        return Answer(response.status, "" if 200 <= response.status < 300
                      else _error_message(data))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


class V2Writer:
    """influxdb-client's synchronous write API (`POST /api/v2/write`, precision ns)."""

    def __init__(self, config: InfluxSinkConfig) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        token = config.token.get_secret_value() if config.token else ""
        self.client = InfluxDBClient(url=config.url, token=token, org=config.org,
                                     timeout=int(config.timeout * 1000),
                                     verify_ssl=config.verify_ssl)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.bucket = config.bucket
        self.org = config.org
        # influxdb-client types its WritePrecision members as plain str constants
        self.precision: WritePrecision = WritePrecision.NS  # type: ignore[assignment]

    def post(self, body: bytes) -> Answer:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.write_api.write(bucket=self.bucket, org=self.org, record=body,
                                 write_precision=self.precision)
        except ApiException as exc:
            return Answer(int(exc.status or 0), _error_message(exc.body or str(exc.reason)))
        except (HTTPError, OSError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        return Answer(204)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class InfluxSink(Sink):
    """Writes readings as line protocol; see the module docstring for what each answer does."""

    name = "influxdb"
    settings_model = InfluxSinkConfig

    @classmethod
    def from_settings(cls, name: str, settings: SinkSettings,
                      environment: SinkEnvironment) -> InfluxSink:
        assert isinstance(settings, InfluxSinkConfig)
        return cls(settings, environment.contexts, name=name)

    def __init__(self, config: InfluxSinkConfig, contexts: Mapping[str, DeviceContext],
                 counters: Counters = COUNTERS, name: str | None = None) -> None:
        super().__init__(contexts, name)
        self.config = config
        self.delivery = Delivery(batch_size=config.batch_size,
                                 flush_interval=config.flush_interval, max_rate=config.max_rate)
        self.counters = counters
        self._writer: Writer | None = None
        self._connected = False
        self._arrays_warned: set[tuple[str, str]] = set()
        self._missing_database_told = False

    @property
    def connected(self) -> bool:
        """Whether the last write reached the server and was accepted (or isolated)."""
        return self._connected

    async def start(self) -> None:
        """Creates the HTTP client; connects lazily, on the first write (or now, to create the
        v1 database when `create_database` is set; unreachable now: at the first write)."""
        self._writer = V2Writer(self.config) if self.config.api == "v2" else V1Writer(self.config)
        if self._creates_database():
            with contextlib.suppress(SinkError):
                await self._create_database()

    def _creates_database(self) -> bool:
        return self.config.api == "v1" and self.config.create_database

    async def _create_database(self) -> None:
        assert isinstance(self._writer, V1Writer)
        try:
            answer = await asyncio.to_thread(self._writer.create_database)
        except Unreachable as exc:
            raise SinkError(f"InfluxDB at {self.config.url} unreachable: {exc}",
                            self.name) from exc
        if answer.ok:
            log.info("influxdb: database %r is there (create_database: true)",
                     self.config.database)
        else:
            log.error("influxdb: could not create database %r (%d: %s); check that "
                      "sinks.influxdb.username is an admin user", self.config.database,
                      answer.status, answer.message, self.name)

    async def send(self, readings: Sequence[Reading]) -> None:
        batch = to_lines(readings, self.contexts)
        self._count_dropped(batch.not_finite, "not_finite")
        self._count_dropped(batch.invalid_name, "invalid_name")
        self._skip_arrays(batch.arrays)
        if not batch.lines:
            return
        try:
            rejected = await self._write_isolating(batch.lines, [])
        except SinkError:
            self._connected = False
            self.counters.inc("gateway_sink_failures_total", sink=self.name)
            raise
        self._connected = True
        self._count_dropped(len(rejected), "rejected")
        self._log_rejected(rejected)
        self.counters.inc("gateway_sink_sent_total", len(batch.lines) - len(rejected),
                          sink=self.name)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)
            self._writer = None
        self._connected = False

    async def _write_isolating(self, lines: list[str],
                               rejected: list[tuple[str, Answer]]) -> list[tuple[str, Answer]]:
        """Write `lines`; bisect a rejected batch down to the single lines the server refuses,
        which are appended to `rejected` (line, answer) and not retried."""
        answer = await self._post(lines)
        if answer.status == 404 and self._creates_database():
            await self._create_database()
            answer = await self._post(lines)
        if answer.ok:
            return rejected
        self._raise_unless_data_rejected(answer)
        if len(lines) == 1:
            rejected.append((lines[0], answer))
            return rejected
        middle = len(lines) // 2
        await self._write_isolating(lines[:middle], rejected)
        return await self._write_isolating(lines[middle:], rejected)

    async def _post(self, lines: list[str]) -> Answer:
        if self._writer is None:
            await self.start()
        assert self._writer is not None
        body = "\n".join(lines).encode()
        try:
            return await asyncio.to_thread(self._writer.post, body)
        except Unreachable as exc:
            raise SinkError(f"InfluxDB at {self.config.url} unreachable: {exc}",
                            self.name) from exc

    def _raise_unless_data_rejected(self, answer: Answer) -> None:
        """Raise `SinkError` unless the answer blames the data (a 4xx about lines)."""
        where = f"InfluxDB at {self.config.url}"
        setting = (f"sinks.{self.name}.token" if self.config.api == "v2"
                   else f"sinks.{self.name}.username/password")
        if answer.status in (401, 403):
            raise SinkError(f"{where} refused the credentials ({answer.status}: "
                            f"{answer.message}); check {setting}", self.name)
        if answer.status == 404 and self.config.api == "v1":
            self._tell_missing_database(answer)
            raise SinkError(f"{where}: database {self.config.database!r} not found (404); "
                            "the readings wait in the buffer", self.name)
        if answer.status == 404:
            target = (f"org {self.config.org!r} / bucket {self.config.bucket!r} (or the "
                      "/api/v2/write endpoint: InfluxDB 1.x before 1.8 needs `api: v1`)")
            raise SinkError(f"{where}: {target} not found (404: {answer.message})", self.name)
        if not 400 <= answer.status < 500 or answer.status == 429:
            raise SinkError(f"{where} answered {answer.status}: {answer.message}", self.name)

    def _tell_missing_database(self, answer: Answer) -> None:
        """Once per run: how to create the database (the retries then say it in one line)."""
        if self._missing_database_told:
            return
        self._missing_database_told = True
        log.error("%s", missing_database_help(self.config, answer.message, self.name))

    def _count_dropped(self, count: int, reason: str) -> None:
        if count:
            self.counters.inc("gateway_sink_dropped_total", count, sink=self.name, reason=reason)

    def _skip_arrays(self, arrays: list[tuple[str, str]]) -> None:
        """Line protocol has no array type: counted, and said once per tag."""
        self._count_dropped(len(arrays), "array")
        for device, tag in arrays:
            if (device, tag) not in self._arrays_warned:
                self._arrays_warned.add((device, tag))
                # INFO, not WARNING: it is how the sink works, not something going wrong.
                log.info("influxdb: %s/%s is an array, which line protocol cannot hold; its "
                            "readings are not written (counted in gateway_sink_dropped_total"
                            "{reason=\"array\"}); MQTT carries them as JSON lists", device, tag)

    def _log_rejected(self, rejected: list[tuple[str, Answer]]) -> None:
        for line, answer in rejected[:MAX_LOGGED_REJECTIONS]:
            log.error("influxdb rejected a line (%d: %s), dropped: %s", answer.status,
                      answer.message, line)
        if len(rejected) > MAX_LOGGED_REJECTIONS:
            log.error("influxdb rejected %d more line(s) of this batch, dropped",
                      len(rejected) - MAX_LOGGED_REJECTIONS)


def missing_database_help(config: InfluxSinkConfig, message: str = "",
                          sink: str = "influxdb") -> str:
    """What to do when a v1 InfluxDB has no such database, with commands to copy."""
    parts = urllib.parse.urlsplit(config.url)
    name = config.database
    influx = f"influx -host {parts.hostname or '127.0.0.1'} -port {parts.port or 8086}"
    if config.username:
        influx += f" -username {config.username} -password '...'"
    curl_user = f" -u {config.username}" if config.username else ""
    return (f"InfluxDB at {config.url} has no database {name!r}"
            f"{f' ({message})' if message else ''}. Create it once with\n"
            f"    {influx} -execute 'CREATE DATABASE {name}'\n"
            f"or  curl{curl_user} -XPOST '{config.url}/query' --data-urlencode "
            f"'q=CREATE DATABASE \"{name}\"'\n"
            f"or set `create_database: true` under sinks.{sink} so the gateway creates it at "
            "start. Until then the readings wait in the buffer; nothing is lost.")
