"""The HTTP status server: /healthz, /metrics (Prometheus), /api/tags, /api/status,
POST /api/reload and the status page at /, on gateway.http_listener (h11; its limits and
timeouts), with the access rules of gateway.http_access checked before any route.

It reads a `StateView` (gateway.state.GatewayState is one) and calls a `reload` function; it
never imports the runtime."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.resources import files
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import SecretStr

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.http_access import AccessPolicy, RequestFacts, parse_listen
from gateway.http_listener import HttpListener, Request, Response
from gateway.metrics import new_registry
from gateway.models import Reading, iso_z

log = logging.getLogger(__name__)

Reload = Callable[[str | None], Awaitable[dict[str, Any]]]  # the file the caller names
Route = Callable[[Request], Awaitable[Response]]
MAX_RECENT_TAGS = 500  # sparklines asked for in one call (the rows a page shows)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
}


class SinkView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def connected(self) -> bool: ...


class DeviceHealthView(Protocol):
    @property
    def error(self) -> str | None: ...
    @property
    def last_ok(self) -> float | None:
        """time.monotonic() of the device's last good read."""
    def healthy(self, now: float) -> bool: ...


class TagsView(Protocol):
    @property
    def latest(self) -> Mapping[tuple[str, str], Reading]: ...
    def points(self, device: str, tag: str) -> list[tuple[float, float]]:
        """The tag's recent numeric values as (epoch seconds, value), oldest first."""


class BufferView(Protocol):
    @property
    def degraded(self) -> str | None:
        """Why new readings are held in memory only (a full disk), or None."""
    def depth(self, sink: str) -> int: ...
    def oldest_unsent_age(self, sink: str) -> float: ...
    def dropped(self, sink: str) -> int: ...


class KpiView(Protocol):
    """The edge KPIs as the status page reads them (gateway.kpi.stage.KpiStage is one)."""

    def current(self, device: str) -> dict[str, Any] | None: ...
    def history(self, device: str) -> list[dict[str, Any]]: ...
    def recent(self, device: str) -> list[dict[str, Any]]: ...


class StateView(Protocol):
    """What the status server reads of a running gateway (read-only; properties so that a
    `list[Sink]` or `dict[str, DeviceHealth]` attribute satisfies it)."""

    @property
    def config(self) -> GatewayConfig: ...
    @property
    def sinks(self) -> Sequence[SinkView]: ...
    @property
    def health(self) -> Mapping[str, DeviceHealthView]: ...
    @property
    def tags(self) -> TagsView: ...
    @property
    def buffer(self) -> BufferView | None: ...
    @property
    def read_seconds(self) -> Histogram: ...
    @property
    def kpi(self) -> KpiView | None:
        """The edge KPIs, when a device has an `oee:` block."""


# The page's charting library, vendored (no CDN: the box may have no internet).
STATIC_FILES = {"/static/uplot.js": (("uplot", "uPlot.iife.min.js"), "text/javascript"),
                "/static/uplot.css": (("uplot", "uPlot.min.css"), "text/css")}


class HttpListenError(GatewayError):
    """The status server cannot listen on its address (in use, not this machine's, ...)."""


class StatusServer:
    """Serves a gateway's state over HTTP until `close()`."""

    def __init__(self, state: StateView, listen: str, token: SecretStr | None = None,
                 reload: Reload | None = None) -> None:
        self.state = state
        self.listen = listen
        self.host, self._requested_port = parse_listen(listen)
        self.port = 0  # the port it listens on, once started
        self._reload = reload
        self.policy = AccessPolicy(self.host, token.get_secret_value() if token else None)
        self._registry = new_registry()
        self._registry.register(state.read_seconds)
        self._page = files("gateway").joinpath("status_page.html").read_bytes()
        self._static = {path: files("gateway").joinpath("static", *parts).read_bytes()
                        for path, (parts, _) in STATIC_FILES.items()}
        self._enum_cache: tuple[GatewayConfig, dict[tuple[str, str], Mapping[int, str]]] | None \
            = None
        self._listener = HttpListener(self._guard, on_response=_add_security_headers)
        self._routes: dict[str, dict[str, Route]] = {
            "/healthz": {"GET": self._healthz}, "/metrics": {"GET": self._metrics},
            "/api/tags": {"GET": self._tags}, "/api/status": {"GET": self._status},
            "/api/recent": {"GET": self._recent}, "/api/reload": {"POST": self._reload_handler},
            "/": {"GET": self._page_handler}, "/index.html": {"GET": self._page_handler},
            **{path: {"GET": self._static_handler} for path in STATIC_FILES}}

    async def start(self) -> None:
        try:
            self.port = await self._listener.start(self.host, self._requested_port)
        except OSError as exc:
            raise HttpListenError(f"status server cannot listen on {self.listen}: "
                                  f"{exc.strerror or exc}; change gateway.http.listen") from exc
        log.info("status server on http://%s:%d/", self.host, self.port)

    async def close(self) -> None:
        await self._listener.close(grace=2.0)

    async def _guard(self, request: Request) -> Response:
        """The access rules, before any route (an unknown path is refused like a known one,
        so that a refusal says nothing of what exists)."""
        refusal = self.policy.check(_facts(request))
        if refusal is not None:
            headers = ({"WWW-Authenticate": 'Bearer realm="gateway"'}
                       if refusal.status == 401 else {})
            return _text(refusal.status, refusal.reason, headers)
        methods = self._routes.get(request.path)
        if methods is None:
            return _text(404, "not found")
        route = methods.get("GET" if request.method == "HEAD" else request.method)
        if route is None:
            allowed = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            return _text(405, "method not allowed", {"Allow": allowed})
        return await route(request)

    async def _healthz(self, _: Request) -> Response:
        health = self.health()
        return _json(200 if health["healthy"] else 503, health)

    async def _metrics(self, _: Request) -> Response:
        return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    async def _tags(self, _: Request) -> Response:
        return _json(200, self.tags())

    async def _status(self, _: Request) -> Response:
        return _json(200, self.status())

    async def _recent(self, request: Request) -> Response:
        devices, tags = request.query.get("device", []), request.query.get("tag", [])
        if len(devices) != len(tags) or len(devices) > MAX_RECENT_TAGS:
            return _text(400, f"give up to {MAX_RECENT_TAGS} pairs of device= and tag=")
        return _json(200, self.recent(list(zip(devices, tags, strict=True))))

    async def _page_handler(self, _: Request) -> Response:
        return Response(200, self._page, "text/html; charset=utf-8")

    async def _static_handler(self, request: Request) -> Response:
        content_type = STATIC_FILES[request.path][1]
        return Response(200, self._static[request.path], f"{content_type}; charset=utf-8",
                        {"Cache-Control": "max-age=86400"})

    async def _reload_handler(self, request: Request) -> Response:
        if self._reload is None:
            return _json(501, {"ok": False, "errors": ["this gateway cannot reload"]})
        try:
            # `gateway reload --config FILE` names its file: refused unless it is ours
            result = await self._reload(next(iter(request.query.get("config", [])), None))
        except Exception as exc:  # a failed reload is an answer, never a dropped connection
            log.exception("reload failed")
            return _json(500, {"ok": False, "errors": [f"reload failed: {exc!r}"]})
        return _json(200 if result.get("ok") else 400, result)

    def health(self) -> dict[str, Any]:
        """Healthy when every sink is connected, every device answered in its last cycles and
        the buffer can write its file."""
        now = time.monotonic()
        problems = [f"sink {s.name} is not connected" for s in self.state.sinks
                    if not s.connected]
        for name, device in self.state.health.items():
            if not device.healthy(now):
                problems.append(f"device {name}: {device.error or 'no answer in its last cycles'}")
        if self.state.buffer is not None and self.state.buffer.degraded:
            problems.append(f"buffer: {self.state.buffer.degraded}")
        return {"healthy": not problems, "problems": problems}

    def tags(self) -> list[dict[str, Any]]:
        """Every tag's latest reading; `text` is the enumeration text of its value, if any."""
        enums = self._enums()
        return [{"device": r.device, "tag": r.tag, "value": r.value, "quality": r.quality.value,
                 "unit": r.unit, "ts": iso_z(r.source_ts),
                 "error": r.error, "text": _enum_text(enums.get(key), r.value)}
                for key, r in sorted(self.state.tags.latest.items())]

    def _enums(self) -> Mapping[tuple[str, str], Mapping[int, str]]:
        """(device, tag) -> value texts of the enumeration tags, derived once per config."""
        config = self.state.config
        cache = self._enum_cache
        if cache is None or cache[0] is not config:
            enums: dict[tuple[str, str], Mapping[int, str]] = {
                (d.name, t.name): t.enum for d in config.devices
                for t in d.declared_tags() if t.enum}
            cache = self._enum_cache = (config, enums)
        return cache[1]

    def recent(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """The recent values of the given tags (the sparklines of the rows a page shows):
        per tag `t` (seconds since the epoch) and `v` lists, oldest first."""
        recent = []
        for device, tag in keys:
            points = [(t, v) for t, v in self.state.tags.points(device, tag)
                      if math.isfinite(v)]
            recent.append({"device": device, "tag": tag, "t": [round(p[0], 3) for p in points],
                           "v": [float(p[1]) for p in points]})
        return recent

    def status(self) -> dict[str, Any]:
        state = self.state
        return {"gateway": state.config.gateway.id, "site": state.config.gateway.site,
                **self.health(), "sinks": [self._sink_status(s) for s in state.sinks],
                "devices": self._device_status(time.monotonic())}

    def _sink_status(self, sink: SinkView) -> dict[str, Any]:
        buffer = self.state.buffer
        return {"name": sink.name, "connected": sink.connected,
                "backlog": buffer.depth(sink.name) if buffer else None,
                "oldest_unsent_age_s": buffer.oldest_unsent_age(sink.name) if buffer else None,
                "dropped": buffer.dropped(sink.name) if buffer else None}

    def _device_status(self, now: float) -> list[dict[str, Any]]:
        """Each device's health; `last_ok_age_s` is the seconds since its last good read (None:
        never answered since the start)."""
        configs = {d.name: d for d in self.state.config.devices}
        kpi = getattr(self.state, "kpi", None)
        devices = []
        for name, health in self.state.health.items():
            config = configs.get(name)
            device = {
                "name": name, "healthy": health.healthy(now), "error": health.error,
                "last_ok_age_s": None if health.last_ok is None else round(now - health.last_ok, 3),
                "driver": config.driver if config else None,
                "poll_interval_s": config.poll_interval if config else None}
            if kpi is not None and config is not None and config.oee is not None:
                device["kpi"] = {"current": kpi.current(name), "trend": kpi.history(name),
                                 "shifts": kpi.recent(name)}
            devices.append(device)
        return devices


def _enum_text(enum: Mapping[int, str] | None, value: Any) -> str | None:
    if enum is None or isinstance(value, bool) or not isinstance(value, int):
        return None
    return enum.get(value)


def _facts(request: Request) -> RequestFacts:
    headers = request.headers
    return RequestFacts(
        method=request.method, path=request.path, host=headers.get("host"),
        origin=headers.get("origin"), fetch_site=headers.get("sec-fetch-site"),
        authorization=headers.get("authorization"), content_type=headers.get("content-type"),
        has_body=bool(request.body) or "transfer-encoding" in headers)


def _add_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data, default=str).encode(), "application/json")


def _text(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, (reason + "\n").encode(), headers=dict(headers or {}))

