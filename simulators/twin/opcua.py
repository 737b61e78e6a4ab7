"""An OPC UA twin: an asyncua server holding the nodes a config names, in the namespaces it
names (by URI, registered; by index, with placeholder namespaces up to it), with the variant
types the layout gives them. Values move every tick, except nodes a client wrote (they hold
the written value). A sequence node counts the Reads that include it (poll mode) or, when a
device subscribes, moves once per poll interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback

from simulators.twin.layout import NodePlan, OpcUaServerPlan
from simulators.twin.values import value_at

log = logging.getLogger(__name__)
PLACEHOLDER_URI = "urn:shopfloor:twin:ns{}"
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def variant_value(plan: NodePlan, t: float) -> Any:
    """The node's value at simulated time `t`, as its variant type holds it."""
    raw = value_at(plan.motion, t)
    variant = plan.variant
    if variant == "DateTime":
        value: Any = _EPOCH + timedelta(seconds=int(t))
    elif variant == "ByteString":
        value = plan.tag.encode()
    elif variant in ("Float", "Double"):
        value = float(raw)
    else:
        value = raw
    return [value, value, value] if plan.array else value


def node_id(plan: NodePlan, index: int) -> ua.NodeId:
    identifier: Any = plan.identifier
    if plan.id_type == "Guid" and not isinstance(identifier, uuid.UUID):
        identifier = uuid.UUID(str(identifier))
    return ua.NodeId(identifier, ua.Int16(index), getattr(ua.NodeIdType, plan.id_type))


class OpcUaTwin:
    """`async with OpcUaTwin(plan, port=0) as twin:` then `twin.endpoint`."""

    def __init__(self, plan: OpcUaServerPlan, *, host: str = "127.0.0.1", port: int = 0,
                 tick: float = 0.2) -> None:
        from simulators.opcua.server import free_port

        self.plan = plan
        self.host = host
        self.port = port or free_port()
        path = urlsplit(plan.endpoint).path or "/"
        self.endpoint = f"opc.tcp://{host}:{self.port}{path}"
        self.tick = tick
        self.frozen = False
        self.sequences: dict[str, int] = {}  # device.tag -> last sequence served
        self.served: dict[str, list[tuple[int, float]]] = {}  # device.tag -> (number, time)
        self.held: set[str] = set()  # tags (device.tag) a client wrote
        self._server: Server | None = None
        self._ids: dict[str, ua.NodeId] = {}  # device.tag -> node id
        self._plans: dict[str, NodePlan] = {f"{n.device}.{n.tag}": n for n in plan.nodes}
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    async def __aenter__(self) -> OpcUaTwin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        indexes = await self._namespaces(server)
        for key, plan in self._plans.items():
            index = indexes[plan.namespace_uri] if plan.namespace_uri else plan.namespace_index
            self._ids[key] = await self._add(server, plan, index)
        server.subscribe_server_callback(CallbackType.PreRead, self._on_read)
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        self._server = server
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _namespaces(self, server: Server) -> dict[str | None, int]:
        indexes: dict[str | None, int] = {}
        for uri in self.plan.namespace_uris:
            indexes[uri] = await server.register_namespace(uri)
        array = await server.get_namespace_array()
        for index in range(len(array), self.plan.highest_index + 1):
            await server.register_namespace(PLACEHOLDER_URI.format(index))
        return indexes

    async def _add(self, server: Server, plan: NodePlan, index: int) -> ua.NodeId:
        nodeid = node_id(plan, index)
        vtype = getattr(ua.VariantType, plan.variant)
        node = await server.nodes.objects.add_variable(
            nodeid, ua.QualifiedName(str(plan.identifier), index),
            variant_value(plan, 0.0), vtype)
        if plan.array:
            await node.write_value_rank(ua.ValueRank.OneDimension)
        await node.set_writable()
        return nodeid

    async def _run(self) -> None:
        last_sequence_tick = 0.0
        while True:
            now = time.monotonic()
            if not self.frozen:
                await self._update(now - self._started)
                if now - last_sequence_tick >= self.plan.poll_interval:
                    last_sequence_tick = now
                    await self._subscribed_sequences()
            await asyncio.sleep(self.tick)

    async def _update(self, t: float) -> None:
        for key, plan in self._plans.items():
            if plan.motion.behaviour == "sequence" or key in self.held:
                continue
            await self._write(key, variant_value(plan, t))

    async def _write(self, key: str, value: Any) -> None:
        assert self._server is not None
        plan = self._plans[key]
        now = datetime.now(UTC)
        variant = ua.Variant(value, getattr(ua.VariantType, plan.variant))
        await self._server.write_attribute_value(
            self._ids[key], ua.DataValue(variant, SourceTimestamp=now,  # type: ignore[arg-type]
                                         ServerTimestamp=now))  # type: ignore[arg-type]

    async def _next_sequence(self, plan: NodePlan) -> None:
        key = f"{plan.device}.{plan.tag}"
        number = self.sequences[key] = self.sequences.get(key, 0) + 1
        self.served.setdefault(key, []).append((number, time.time()))
        await self._write(key, number)

    async def _subscribed_sequences(self) -> None:
        for plan in self._plans.values():
            if plan.motion.behaviour == "sequence" and self.plan.devices[plan.device] != "poll":
                await self._next_sequence(plan)

    async def _on_read(self, event: ServerItemCallback, _: object) -> None:
        """A Read that includes a polled device's sequence node moves it first."""
        if not event.is_external or self.frozen:
            return
        wanted = {item.NodeId for item in event.request_params.NodesToRead}
        for key, plan in self._plans.items():
            if plan.motion.behaviour == "sequence" and self._ids[key] in wanted \
                    and self.plan.devices[plan.device] == "poll":
                await self._next_sequence(plan)

    async def _on_write(self, event: ServerItemCallback, _: object) -> None:
        if not event.is_external:
            return
        written = {item.NodeId for item in event.request_params.NodesToWrite}
        self.held.update(key for key, nodeid in self._ids.items() if nodeid in written)

    # -- for tests and the drill -------------------------------------------------------------

    def freeze(self, on: bool = True) -> None:
        self.frozen = on

    def value_of(self, device: str, tag: str) -> Any:
        assert self._server is not None
        value = self._server.read_attribute_value(self._ids[f"{device}.{tag}"]).Value
        if value is None:
            return None
        return tuple(value.Value) if isinstance(value.Value, list) else value.Value
