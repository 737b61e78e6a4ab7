"""The status server's token, origin and size rules over real sockets on 127.0.0.1, with real
concurrent HTTP calls (aiohttp's client and raw sockets) against a running gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.buffer import DurableBuffer
from gateway.config import load_config, parse_config
from gateway.http_access import AccessPolicy
from gateway.http_server import HttpListenError, StatusServer
from gateway.runtime import Gateway
from gateway.state import GatewayState
from tests.integration.test_buffer_faults import Feed, fill, tiny_disk
from tests.integration.test_runtime import ListSink, ScriptedDriver
from tests.procs import free_port

pytestmark = pytest.mark.integration
__all__ = ["tiny_disk"]  # a fixture (a real 2 MiB tmpfs), used by name
TOKEN = "plant-1-status-token-0123"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


def config_text(tmp_path: Path, port: int, token: str = "${GW_HTTP_TOKEN}") -> str:
    return f"""
gateway:
  id: access-test
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 2s
  http: {{listen: "127.0.0.1:{port}", token: "{token}"}}
sinks:
  mqtt: {{url: "mqtt://127.0.0.1:{free_port()}"}}
"""


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                          ) -> AsyncIterator[tuple[Gateway, str, Path]]:
    """A gateway started from a config file whose token comes from the environment."""
    monkeypatch.setenv("GW_HTTP_TOKEN", TOKEN)
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(tmp_path, free_port()))
    gateway = Gateway(load_config(path), [ListSink()], [ScriptedDriver("press", 0.1)],
                      config_path=str(path))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not (gateway.status_server and gateway.status_server.port):
            assert time.monotonic() < deadline and not task.done(), "status server never started"
            await asyncio.sleep(0.05)
        yield gateway, f"http://127.0.0.1:{gateway.status_server.port}", path
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def call(session: aiohttp.ClientSession, method: str, url: str,
               **kwargs: Any) -> tuple[int, str]:
    async with session.request(method, url, timeout=aiohttp.ClientTimeout(total=30),
                               **kwargs) as answer:
        return answer.status, await answer.text()


async def test_reload_needs_the_token_and_same_origin_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_gateway(tmp_path, monkeypatch) as (_, base, _path), \
            aiohttp.ClientSession() as session:
        reload = f"{base}/api/reload"
        status, text = await call(session, "POST", reload)
        assert status == 401 and "Bearer" in text
        async with session.post(reload) as answer:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await call(session, "POST", reload, headers={"Authorization": "Bearer wrong"}
                           ))[0] == 401
        status, text = await call(session, "POST", reload, headers=AUTHORIZED)
        assert status == 200 and json.loads(text)["ok"] is True
        # A page of another site, even one that knows the token, is refused.
        for origin in ("http://evil.example", "http://127.0.0.1:3000", "null"):
            status, text = await call(session, "POST", reload,
                                      headers={**AUTHORIZED, "Origin": origin})
            assert status == 403 and "cross-origin" in text
        # What an HTML form can send: refused before the token is even looked at.
        status, _ = await call(session, "POST", reload, data={"a": "1"}, headers=AUTHORIZED)
        assert status == 415
        status, _ = await call(session, "POST", reload, json={}, headers={
            **AUTHORIZED, "Origin": base, "Sec-Fetch-Site": "same-origin"})
        assert status == 200, "the gateway's own page may reload"
        # Reading stays open on loopback.
        assert (await call(session, "GET", f"{base}/api/status"))[0] == 200


async def test_a_network_listen_guards_every_path_but_health_and_the_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules of a 0.0.0.0 listen, applied to a server on 127.0.0.1 (tests bind loopback
    only): the policy is what decides, not the socket."""
    async with running_gateway(tmp_path, monkeypatch) as (gateway, base, _path), \
            aiohttp.ClientSession() as session:
        assert gateway.status_server is not None
        gateway.status_server.policy = AccessPolicy("0.0.0.0", TOKEN)
        for path in ("/api/status", "/api/tags", "/metrics"):
            assert (await call(session, "GET", base + path))[0] == 401
            assert (await call(session, "GET", base + path, headers=AUTHORIZED))[0] == 200
        for path in ("/healthz", "/"):
            assert (await call(session, "GET", base + path))[0] in (200, 503)
        # The page's charting library comes from the gateway itself (no CDN), token or not.
        status, script = await call(session, "GET", base + "/static/uplot.js")
        assert status == 200 and script.startswith("/*! https://github.com/leeoniya/uPlot")
        status, style = await call(session, "GET", base + "/static/uplot.css")
        assert status == 200 and ".uplot" in style
        assert (await call(session, "GET", base + "/static/other.js"))[0] == 401  # not open


async def test_concurrent_calls_are_each_answered(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_gateway(tmp_path, monkeypatch) as (_, base, _path), \
            aiohttp.ClientSession() as session:
        reads = [call(session, "GET", base + path) for path in
                 ("/api/status", "/api/tags", "/metrics", "/healthz", "/") * 8]
        reloads = [call(session, "POST", f"{base}/api/reload", headers=AUTHORIZED)
                   for _ in range(10)]
        answers = await asyncio.gather(*reads, *reloads)
        assert all(status in (200, 503) for status, _ in answers[:-10])
        assert [json.loads(text)["ok"] for _, text in answers[-10:]] == [True] * 10
        refused = await asyncio.gather(*(call(session, "POST", f"{base}/api/reload")
                                         for _ in range(10)))
        assert {status for status, _ in refused} == {401}


async def raw_request(port: int, request: bytes) -> bytes:
    """Send one request on a fresh socket and read the answer until the server closes.

    The request goes out in one non-blocking send before the server's loop runs again, so the
    server reads it whole: a server that closes with unread input makes the kernel send a
    reset, which may discard its answer before the client reads it."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 10)
        await loop.sock_sendall(sock, request)
        answer = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), 10):
            answer += chunk
    return answer


async def test_oversized_headers_get_a_4xx_and_the_server_keeps_serving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_gateway(tmp_path, monkeypatch) as (_, base, _path):
        port = int(base.rsplit(":", 1)[1])
        head = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        one_huge = head + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
        many_big = head + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 2000) for i in range(40)) + b"\r\n"
        too_many = head + b"".join(b"X-%d: c\r\n" % i for i in range(500)) + b"\r\n"
        huge_line = b"GET /" + b"p" * (70 * 1024) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for request, expected in ((one_huge, 400), (many_big, 431), (too_many, 400),
                                  (huge_line, 400)):
            answer = await raw_request(port, request)
            assert answer.split(b" ", 2)[1] == str(expected).encode(), answer[:200]
        async with aiohttp.ClientSession() as session:
            assert (await call(session, "GET", f"{base}/api/status"))[0] == 200
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("gateway")]
    assert tracebacks == [], "a bad request is an answer, not an uncaught exception"
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.http"]
    assert len(warnings) == 3 and all("bad request refused (400)" in w for w in warnings)


async def test_gateway_reload_command_sends_the_token(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_gateway(tmp_path, monkeypatch) as (_, _base, path):
        def cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "gateway", "reload", "--config",
                                   str(path)], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, **env})

        done = await asyncio.to_thread(cli, {"GW_HTTP_TOKEN": TOKEN})
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["ok"] is True
        # Another token in the caller's environment is refused by the gateway.
        done = await asyncio.to_thread(cli, {"GW_HTTP_TOKEN": "another-token-0123456789"})
        assert done.returncode == 1
        assert TOKEN not in done.stdout + done.stderr


async def test_a_failing_reload_is_a_500_answer_and_no_reload_is_501(tmp_path: Path) -> None:
    config = parse_config(config_text(tmp_path, 0, TOKEN), env={})
    state = Gateway(config, [ListSink()], []).state

    async def failing_reload(named: str | None = None) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    for reload, expected in ((failing_reload, 500), (None, 501)):
        server = StatusServer(state, "127.0.0.1:0", config.gateway.http.token, reload=reload)
        await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                status, text = await call(session, "POST",
                                          f"http://127.0.0.1:{server.port}/api/reload",
                                          headers=AUTHORIZED)
        finally:
            await server.close()
        assert status == expected and json.loads(text)["ok"] is False


async def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    state = Gateway(parse_config(config_text(tmp_path, 0, TOKEN), env={}), [ListSink()], []).state
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = StatusServer(state, f"127.0.0.1:{port}")
        with pytest.raises(HttpListenError) as error:
            await server.start()
    message = str(error.value)
    assert f"127.0.0.1:{port}" in message and "gateway.http.listen" in message
    assert "\n" not in message


async def test_healthz_names_a_buffer_that_cannot_write_its_full_disk(
        tiny_disk: Path, tmp_path: Path) -> None:
    buffer = DurableBuffer(tiny_disk / "buffer.db", ["list"])
    state = GatewayState(parse_config(config_text(tmp_path, 0, TOKEN), env={}), [ListSink()],
                         buffer=buffer)
    server = StatusServer(state, "127.0.0.1:0")
    await server.start()
    try:
        feed = Feed(buffer, lagging="list")
        filler = fill(tiny_disk)
        feed.until(lambda: buffer.degraded is not None, "the buffer to notice the full disk")
        async with aiohttp.ClientSession() as session:
            status, text = await call(session, "GET", f"http://127.0.0.1:{server.port}/healthz")
            assert status == 503
            [problem] = [p for p in json.loads(text)["problems"] if p.startswith("buffer: ")]
            assert "cannot write buffer.db" in problem and "memory only" in problem
            filler.unlink()
            feed.until(lambda: buffer.degraded is None, "writing to work again")
            status, text = await call(session, "GET", f"http://127.0.0.1:{server.port}/healthz")
            assert not [p for p in json.loads(text)["problems"] if p.startswith("buffer: ")]
    finally:
        await server.close()
        buffer.close()
