"""The OPC UA driver: one Read call per cycle (poll) or a buffered subscription (subscribe)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncua import Client, Node, ua

from drivers.base import Driver
from drivers.opcua import nodeids
from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.session import open_client
from drivers.opcua.values import to_reading
from gateway.errors import DeviceUnreachable, DriverError
from gateway.models import Reading, bad_reading

log = logging.getLogger(__name__)


class _Handler:
    """Buffers data-change notifications until read() drains them (never iterator mode)."""

    def __init__(self, driver: OpcUaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.driver._on_change(node, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        self.driver._dead = f"subscription status {status}"


class OpcUaDriver(Driver):
    config_model = OpcUaDeviceConfig

    def __init__(self, config: OpcUaDeviceConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self._client: Client | None = None
        self._nodes: list[Node] = []
        self._by_node: dict[str, int] = {}
        self._buffer: list[Reading] = []
        self._dead: str | None = None

    def tag_names(self) -> list[str]:
        return [t.name for t in self.cfg.tags]

    def tag_units(self) -> dict[str, str | None]:
        return {t.name: t.unit for t in self.cfg.tags}

    def deadbands(self) -> dict[str, float]:
        return {t.name: t.deadband for t in self.cfg.tags if t.deadband is not None}

    def describe_plan(self) -> str:
        return (f"{self.name}: {len(self.cfg.tags)} node(s) from "
                f"{self.cfg.connection.endpoint} by {self.cfg.mode}")

    async def connect(self) -> None:
        self._dead = None
        client = await open_client(self.cfg.connection, self.name)
        self._client = client
        texts = [t.node for t in self.cfg.tags]
        spaces = await client.get_namespace_array() if nodeids.needs_namespaces(texts) else []
        self._nodes = [client.get_node(nodeids.resolve(t, spaces)) for t in texts]
        self._by_node = {n.nodeid.to_string(): i for i, n in enumerate(self._nodes)}
        if self.cfg.mode == "subscribe":
            await self._subscribe(client)

    async def _subscribe(self, client: Client) -> None:
        period_ms = self.cfg.poll_interval * 1000
        sub = await client.create_subscription(period_ms, _Handler(self))
        results = await sub.subscribe_data_change(
            self._nodes, queuesize=self.cfg.queue_size,
            sampling_interval=ua.Double(self.cfg.sampling_interval * 1000))
        for i, handle in enumerate(results):
            if isinstance(handle, ua.StatusCode):
                tag = self.cfg.tags[i]
                self._buffer.append(bad_reading(self.name, tag.name, handle.name, tag.unit))

    def _on_change(self, node: Node, dv: ua.DataValue) -> None:
        i = self._by_node.get(node.nodeid.to_string())
        if i is not None:
            tag = self.cfg.tags[i]
            self._buffer.append(to_reading(self.name, tag.name, dv, tag.unit))

    async def read(self) -> list[Reading]:
        if self._client is None:
            raise DeviceUnreachable("not connected", self.name)
        try:
            await self._client.check_connection()
        except Exception as exc:  # asyncua raises several types for a dead link
            raise DeviceUnreachable(f"session lost: {exc}", self.name) from exc
        if self._dead:
            raise DeviceUnreachable(self._dead, self.name)
        if self.cfg.mode == "subscribe":
            drained, self._buffer = self._buffer, []
            return drained
        return await self._poll(self._client)

    async def _poll(self, client: Client) -> list[Reading]:
        params = ua.ReadParameters()
        for node in self._nodes:
            rv = ua.ReadValueId()
            rv.NodeId = node.nodeid
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        try:
            results = await asyncio.wait_for(client.uaclient.read(params),
                                             self.cfg.connection.timeout)
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise DeviceUnreachable(f"read failed: {exc}", self.name) from exc
        except ua.UaStatusCodeError as exc:
            raise DriverError(f"read refused: {exc}", self.name) from exc
        return [to_reading(self.name, t.name, dv, t.unit)
                for t, dv in zip(self.cfg.tags, results, strict=True)]

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 2)
            except Exception:  # close never raises; the link may already be gone
                log.debug("disconnect of %s failed", self.name, exc_info=True)

