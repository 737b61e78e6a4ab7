"""The status server's HTTP/1.1 listener (gateway.http_listener) over real sockets on
127.0.0.1: keep-alive and pipelining, HEAD, bodies and their limit, 100-continue, a failing
handler, the timeouts that free a connection, and a shutdown that waits for a request being
answered but not for idle clients."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from gateway import http_listener
from gateway.http_listener import HttpListener, Request, Response

pytestmark = pytest.mark.integration
DEADLINE = 20.0


async def echo(request: Request) -> Response:
    if request.path == "/fail":
        raise RuntimeError("handler bug")
    if request.path == "/slow":
        await asyncio.sleep(0.5)
    text = f"{request.method} {request.path} {dict(request.query)} {len(request.body)}"
    return Response(200, text.encode())


def stamped(response: Response) -> None:
    response.headers.setdefault("X-Stamp", "yes")


@contextlib.asynccontextmanager
async def client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[HttpListener]:
    listener = HttpListener(echo, on_response=stamped)
    await listener.start("127.0.0.1", 0)
    try:
        yield listener
    finally:
        await asyncio.wait_for(listener.close(), DEADLINE)


async def answers(reader: asyncio.StreamReader, count: int, head_only: bool = False
                  ) -> list[tuple[bytes, bytes]]:
    """`count` answers read off one connection: (status line and headers, body); no body is
    read for answers to HEAD (`head_only`)."""
    found = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length),
                                                             DEADLINE)
        found.append((head, body))
    return found


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), DEADLINE) == b""


async def test_one_connection_carries_pipelined_requests_and_head_has_no_body() -> None:
    async with listening() as listener, client(listener.port) as (reader, writer):
        writer.write(b"GET /a?x=1&x=2 HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
                     b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        [(head, body)] = await answers(reader, 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"x-stamp: yes" in head.lower()
        assert body == b"GET /a {'x': ['1', '2']} 0"
        [(head, _)] = await answers(reader, 1, head_only=True)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"content-length: 12" in head.lower(), "HEAD says the GET body's length"
        [(_, body)] = await answers(reader, 1)  # right after HEAD's headers: no body between
        assert body == b"POST /c {} 3"


async def test_a_chunked_body_is_read_and_one_over_the_limit_is_413() -> None:
    async with listening() as listener, client(listener.port) as (reader, writer):
        writer.write(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        [(_, body)] = await answers(reader, 1)
        assert body == b"POST /c {} 5"
        big = http_listener.MAX_BODY_BYTES + 1
        writer.write(b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % big
                     + b"z" * big)
        [(head, _)] = await answers(reader, 1)
        assert head.startswith(b"HTTP/1.1 413") and b"x-stamp: yes" in head.lower()
        assert await closed_by_server(reader)


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with listening() as listener, client(listener.port) as (reader, writer):
        writer.write(b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(b"ok")
        [(_, body)] = await answers(reader, 1)
        assert body == b"POST /c {} 2"


async def test_a_failing_handler_is_a_500_and_the_connection_goes_on() -> None:
    async with listening() as listener, client(listener.port) as (reader, writer):
        writer.write(b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n")
        failed, served = await answers(reader, 2)
        assert failed[0].startswith(b"HTTP/1.1 500") and b"handler bug" not in failed[1]
        assert served[1] == b"GET /ok {} 0"


async def test_a_garbled_request_is_a_400_with_the_headers_of_every_answer() -> None:
    async with listening() as listener, client(listener.port) as (reader, writer):
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 400") and b"x-stamp: yes" in head.lower()
        assert b"connection: close" in head.lower()


async def test_idle_and_slow_clients_are_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_listener, "IDLE_TIMEOUT", 0.3)
    monkeypatch.setattr(http_listener, "REQUEST_TIMEOUT", 0.3)
    async with listening() as listener:
        async with client(listener.port) as (reader, writer):
            writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            await answers(reader, 1)
            assert await closed_by_server(reader), "a kept-alive connection past its idle time"
        async with client(listener.port) as (reader, writer):
            writer.write(b"GET /a HTTP/1.1\r\nHost:")  # and never the rest
            assert await closed_by_server(reader), "a request that never arrives whole"


async def test_close_finishes_the_request_being_answered_and_drops_idle_ones() -> None:
    listener = HttpListener(echo)
    await listener.start("127.0.0.1", 0)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", listener.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    deadline = time.monotonic() + DEADLINE
    while not any(listener._connections.values()):  # the slow request is being answered
        assert time.monotonic() < deadline, "the request never reached its handler"
        await asyncio.sleep(0.01)
    await asyncio.wait_for(listener.close(grace=DEADLINE), DEADLINE)
    [(_, body)] = await answers(reader, 1)
    assert body == b"GET /slow {} 0"
    assert await closed_by_server(idle_reader)
    for each in (writer, idle_writer):
        each.close()


def test_the_gateways_run_path_does_not_import_aiohttp() -> None:
    code = "import sys, gateway.runtime, gateway.cli; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
