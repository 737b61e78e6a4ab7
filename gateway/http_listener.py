"""A small HTTP/1.1 server for the status server: asyncio streams, with h11 (python-hyper's
HTTP/1.1 state machine) for parsing and framing: keep-alive, pipelining, HEAD, chunked bodies,
HTTP/1.0 and `Expect: 100-continue` are h11's, the limits and timeouts below are ours.

Why not aiohttp's server: importing aiohttp cost 11 MiB of the gateway's RSS (docs/performance.md,
"Memory, round four"), an eighth of the 80 MB a 10,000-tag gateway may take, for five GET routes
and one POST; h11 is 0.3 MiB."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger("gateway.http")

MAX_FIELD_BYTES = 8190
"""The longest request line or header line (as aiohttp and nginx allow): 400 beyond it."""
MAX_HEADERS = 64
"""The most header lines a request may have: 400 beyond it."""
MAX_HEAD_BYTES = 64 * 1024
"""The most a request's header block may hold in total: 431 beyond it."""
MAX_BODY_BYTES = 64 * 1024
"""The largest request body (the status server's only POST takes none): 413 beyond it."""
IDLE_TIMEOUT = 75.0
"""Seconds a kept-alive connection may wait for its next request."""
REQUEST_TIMEOUT = 30.0
"""Seconds a request may take to arrive whole once its first byte has (a slow client holds a
connection no longer than this)."""
WRITE_TIMEOUT = 30.0
"""Seconds an answer may take to be taken by a client that reads slowly."""
READ_CHUNK = 65536


@dataclass(frozen=True)
class Request:
    """A request as the handler sees it: header names lowercased, the first value of a
    repeated header in `headers` and every line in `raw_headers`."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False
    """Close the connection after this answer."""


Handler = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    """A request answered with a 4xx before any handler runs."""

    def __init__(self, status: int, reason: str, warn: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.warn = warn


class _Closed(Exception):
    """The client closed the connection, or went quiet past a timeout."""


class HttpListener:
    """Serves `handler` on host:port until `close()`."""

    def __init__(self, handler: Handler,
                 on_response: Callable[[Response], None] | None = None) -> None:
        """`on_response` sees every answer before it is sent, the refusals of malformed
        requests too (the status server adds its security headers there)."""
        self._handler = handler
        self._on_response = on_response or (lambda response: None)
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> busy with a request
        self._closing = False
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; the port listened on. OSError when the address cannot be had."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=READ_CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening, close idle connections at once and give requests being answered
        up to `grace` seconds."""
        if self._server is None:
            return
        self._closing = True  # a request being answered is its connection's last
        self._server.close()
        idle = [task for task, busy in self._connections.items() if not busy]
        for task in idle:
            task.cancel()
        busy = [task for task in self._connections if task not in idle]
        if busy:
            _, late = await asyncio.wait(busy, timeout=grace)
            for task in late:
                task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=grace)
        await self._server.wait_closed()
        self._server, self._closing = None, False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = False
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=2 * MAX_HEAD_BYTES)
        try:
            await self._requests(connection, reader, writer, task)
        except (_Closed, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # one connection's failure never reaches the listener
            log.exception("status server: connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _requests(self, connection: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        while True:
            try:
                request = await _read_request(connection, reader, writer)
            except _Refused as refused:
                await self._refuse(connection, writer, refused)
                return
            if request is None:
                return
            self._connections[task] = True
            response = await self._answer(request)
            response.close = response.close or self._closing
            await _send(connection, writer, response, head=request.method == "HEAD")
            self._connections[task] = False
            if response.close or connection.our_state is not h11.DONE:
                return
            try:
                connection.start_next_cycle()
            except h11.LocalProtocolError:  # the client is not done: close rather than guess
                return

    async def _answer(self, request: Request) -> Response:
        try:
            response = await self._handler(request)
        except Exception:  # a failed handler is a 500, never a dropped connection
            log.exception("status server: %s %.200s failed", request.method, request.path)
            response = Response(500, b"internal error\n")
        self._on_response(response)
        return response

    async def _refuse(self, connection: h11.Connection, writer: asyncio.StreamWriter,
                      refused: _Refused) -> None:
        if refused.warn:
            log.warning("status server: bad request refused (%d): %.120s", refused.status,
                        refused.reason)
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = Response(refused.status, (refused.reason + "\n").encode(), close=True)
        self._on_response(response)
        with contextlib.suppress(h11.LocalProtocolError):
            await _send(connection, writer, response, head=False)


async def _read_request(connection: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> Request | None:
    """The next whole request; None when the client closed between requests."""
    try:
        event = await _next_event(connection, reader, IDLE_TIMEOUT, idle=True)
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request), event
        method, path, query, headers, raw = _request_head(event)
        if connection.they_are_waiting_for_100_continue:
            writer.write(connection.send(h11.InformationalResponse(status_code=100,
                                                                   headers=[])))
        body = await _read_body(connection, reader)
    except h11.RemoteProtocolError as exc:
        raise _Refused(exc.error_status_hint, str(exc) or "malformed request",
                       warn=exc.error_status_hint != 431) from None
    return Request(method, path, query, headers, raw, body)


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader,
                      timeout: float, idle: bool = False) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), deadline - loop.time())
        except TimeoutError:
            raise _Closed from None
        if idle and data:  # the request has begun: it gets REQUEST_TIMEOUT from here
            idle, deadline = False, loop.time() + REQUEST_TIMEOUT
        connection.receive_data(data)


def _request_head(event: h11.Request) -> tuple[str, str, dict[str, list[str]],
                                                dict[str, str], list[tuple[str, str]]]:
    target = event.target.decode("latin-1")
    if len(event.target) > MAX_FIELD_BYTES:
        raise _Refused(400, f"request line over {MAX_FIELD_BYTES} bytes")
    if len(event.headers) > MAX_HEADERS:
        raise _Refused(400, f"more than {MAX_HEADERS} header lines")
    raw = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers]
    total = 0
    for name, value in raw:
        line = len(name) + len(value) + 2
        if line > MAX_FIELD_BYTES:
            raise _Refused(400, f"header line {name!r} over {MAX_FIELD_BYTES} bytes")
        total += line + 2
    if total > MAX_HEAD_BYTES:
        raise _Refused(431, f"request headers over {MAX_HEAD_BYTES // 1024} KiB", warn=False)
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name, value)
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    return event.method.decode("ascii"), unquote(parts.path) or "/", query, headers, raw


async def _read_body(connection: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        event = await _next_event(connection, reader, REQUEST_TIMEOUT)
        if isinstance(event, h11.EndOfMessage):
            return bytes(body)
        if isinstance(event, h11.ConnectionClosed):
            raise _Closed
        assert isinstance(event, h11.Data), event
        body += event.data
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, f"request body over {MAX_BODY_BYTES // 1024} KiB")


async def _send(connection: h11.Connection, writer: asyncio.StreamWriter,
                response: Response, head: bool) -> None:
    """The answer, framed by its Content-Length; its body left out for HEAD (the length is
    still the body's, as for GET)."""
    headers = [(name, value) for name, value in response.headers.items()]
    if response.content_type is not None:
        headers.append(("Content-Type", response.content_type))
    headers.append(("Content-Length", str(len(response.body))))
    if response.close:
        headers.append(("Connection", "close"))
    writer.write(connection.send(h11.Response(status_code=response.status, headers=headers,
                                              reason=_reason(response.status))))
    if response.body and not head:
        writer.write(connection.send(h11.Data(data=response.body)))
    writer.write(connection.send(h11.EndOfMessage()))
    try:
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
    except TimeoutError:
        raise _Closed from None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
