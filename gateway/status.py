"""The HTTP status server: /healthz, /metrics (Prometheus), /api/tags, /api/status and a small
live page at /. Plain asyncio streams: a handful of read-only endpoints need no framework."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.metrics import new_registry

if TYPE_CHECKING:
    from gateway.state import GatewayState

Reload = Callable[[str | None], Awaitable[dict[str, Any]]]  # the file the caller names

log = logging.getLogger(__name__)


class StatusServer:
    def __init__(self, gateway: GatewayState, listen: str, reload: Reload | None = None) -> None:
        self.gateway = gateway
        self._reload = reload
        host, _, port = listen.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self._server: asyncio.Server | None = None
        self._registry = new_registry()
        self._registry.register(gateway.read_seconds)
        self._page = files("gateway").joinpath("status_page.html").read_bytes()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("status server on http://%s:%d/", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, path = request.split(b" ", 2)[:2]
            if (method, path.split(b"?")[0]) == (b"POST", b"/api/reload"):
                query = urllib.parse.parse_qs(path.partition(b"?")[2].decode())
                named = query.get("config", [None])[0]  # `gateway reload --config FILE`
                result = (await self._reload(named) if self._reload is not None
                          else {"ok": False, "errors": ["reload is not available"]})
                status = 200 if result["ok"] else 400
                content_type, body = "application/json", _json(result)
            else:
                status, content_type, body = self._route(method.decode(), path.decode())
            head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + (body if method != b"HEAD" else b""))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path = path.split("?", 1)[0]
        if path == "/healthz":
            health = self.health()
            return (200 if health["healthy"] else 503), "application/json", _json(health)
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/api/tags":
            return 200, "application/json", _json(self.tags())
        if path == "/api/status":
            return 200, "application/json", _json(self.status())
        if path in ("/", "/index.html"):
            return 200, "text/html; charset=utf-8", self._page
        return 404, "text/plain", b"not found\n"

    def health(self) -> dict[str, Any]:
        """Healthy when every sink is connected and every device answered in its last cycles."""
        now = time.monotonic()
        problems = [f"sink {s.name} is not connected" for s in self.gateway.sinks
                    if not s.connected]
        for name, device in self.gateway.health.items():
            if not device.healthy(now):
                problems.append(f"device {name}: {device.error or 'no answer in its last cycles'}")
        return {"healthy": not problems, "problems": problems}

    def tags(self) -> list[dict[str, Any]]:
        return [{"device": r.device, "tag": r.tag, "value": r.value, "quality": r.quality.value,
                 "unit": r.unit, "ts": r.source_ts.isoformat().replace("+00:00", "Z"),
                 "error": r.error}
                for _, r in sorted(self.gateway.tags.latest.items())]

    def status(self) -> dict[str, Any]:
        gateway = self.gateway
        buffer = gateway.buffer
        sinks = [{"name": s.name, "connected": s.connected,
                  "backlog": buffer.depth(s.name) if buffer else None,
                  "oldest_unsent_age_s": buffer.oldest_unsent_age(s.name) if buffer else None,
                  "dropped": buffer.dropped(s.name) if buffer else None}
                 for s in gateway.sinks]
        now = time.monotonic()
        devices = [{"name": name, "healthy": h.healthy(now), "error": h.error}
                   for name, h in gateway.health.items()]
        return {"gateway": gateway.config.gateway.id, "site": gateway.config.gateway.site,
                **self.health(), "sinks": sinks, "devices": devices}


def _json(data: Any) -> bytes:
    return json.dumps(data, default=str).encode()
