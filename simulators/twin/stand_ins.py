"""Local stand-ins of a gateway's sinks for `gateway drill`, counting the sequence readings
that reach them: the embedded MQTT broker (amqtt) with a plugin that sees every message the
broker receives, and a line-protocol receiver answering like InfluxDB's v1 `POST /write` and
v2 `POST /api/v2/write` (204)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BasePlugin

from gateway.broker import EmbeddedBroker

# (sink, device, sequence, wall time received)
Arrival = Callable[[str, str, int, float], None]
SEQUENCE_FIELD = "drill_sequence"
_LISTENERS: dict[int, Callable[[str, str, bytes], None]] = {}  # broker port -> callback
_MEASUREMENT = re.compile(r"^((?:[^,\\ ]|\\.)+)")
_FIELD = re.compile(rf"[ ,]{SEQUENCE_FIELD}=(-?\d+)i?(?=[ ,]|$)")


class CountingPlugin(BasePlugin[Any]):
    """amqtt calls this for every PUBLISH the broker receives (after its PUBACK is due)."""

    @dataclass
    class Config:
        port: int = 0

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        listener = _LISTENERS.get(int(getattr(self.config, "port", 0)))
        if listener is not None and message is not None:
            listener(client_id, message.topic, bytes(message.data or b""))


def sequence_in_payload(payload: bytes) -> int | None:
    """The sequence a message carries: `{"value": n}` on the sequence tag's topic, or the
    field `drill_sequence` anywhere in a device payload."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return _find_sequence(data)


def _find_sequence(data: Any) -> int | None:
    if isinstance(data, dict):
        if SEQUENCE_FIELD in data:
            inner = data[SEQUENCE_FIELD]
            return _as_int(inner.get("value") if isinstance(inner, dict) else inner)
        for value in data.values():
            found = _find_sequence(value) if isinstance(value, dict | list) else None
            if found is not None:
                return found
    if isinstance(data, list):
        for item in data:
            found = _find_sequence(item)
            if found is not None:
                return found
    return None


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def mqtt_arrival(topic: str, payload: bytes, devices: set[str]) -> tuple[str, int] | None:
    """(device, sequence) of a message, or None when it is not a sequence reading."""
    levels = topic.split("/")
    device = next((level for level in levels if level in devices), None)
    if device is None:
        return None
    if levels[-1] == SEQUENCE_FIELD:
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("quality", "good") == "good":
            number = _as_int(data.get("value"))
            return (device, number) if number is not None else None
        return None
    number = sequence_in_payload(payload) if SEQUENCE_FIELD.encode() in payload else None
    return (device, number) if number is not None else None


def line_arrivals(body: str) -> list[tuple[str, int]]:
    """(measurement, sequence) of each line that carries the sequence field."""
    found = []
    for line in body.splitlines():
        match = _FIELD.search(line)
        head = _MEASUREMENT.match(line)
        if match and head:
            measurement = re.sub(r"\\(.)", r"\1", head.group(1))
            found.append((measurement, int(match.group(1))))
    return found


class CountingBroker(EmbeddedBroker):
    """The embedded broker, telling `on_message(client_id, topic, payload)` what it receives."""

    def __init__(self, on_message: Callable[[str, str, bytes], None], port: int = 0) -> None:
        super().__init__(port=port)
        self.on_message = on_message

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config["plugins"][f"{__name__}.CountingPlugin"] = {"port": self.port}
        return config

    async def __aenter__(self) -> CountingBroker:
        _LISTENERS[self.port] = self.on_message
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        _LISTENERS.pop(self.port, None)


class LineProtocolReceiver:
    """A minimal InfluxDB for line protocol: 204 to `POST /write` and `POST /api/v2/write`,
    204 to `/ping`, 200 to `/health`; `on_lines(body)` sees every body written."""

    def __init__(self, on_lines: Callable[[str], None], port: int = 0) -> None:
        from simulators.modbus.server import free_port

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.on_lines = on_lines
        self.writes = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for client in list(self._clients):  # Python 3.11 leaves kept-alive ones open
                client.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while self._server is not None:
                request = await reader.readline()
                if not request:
                    break
                headers = await _headers(reader)
                body = await _body(reader, headers)
                status = self._answer(request.decode("latin-1"), headers, body)
                if self._server is None:
                    break  # stopped meanwhile: the write is not acknowledged
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n"
                             "X-Influxdb-Version: drill\r\n\r\n".encode())
                await writer.drain()
        self._clients.discard(writer)
        writer.close()

    def _answer(self, request: str, headers: dict[str, str], body: bytes) -> str:
        method, _, rest = request.partition(" ")
        path = urllib.parse.urlsplit(rest.split(" ")[0]).path
        if path == "/health":
            return "200 OK"
        if method == "POST" and path in ("/write", "/api/v2/write"):
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            self.writes += 1
            self.on_lines(body.decode("utf-8", errors="replace"))
            return "204 No Content"
        if path == "/ping":
            return "204 No Content"
        return "404 Not Found"


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            return headers
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    return await reader.readexactly(int(headers.get("content-length", "0")))


def now() -> float:
    return time.time()
