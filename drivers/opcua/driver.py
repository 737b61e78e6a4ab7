"""The OPC UA driver: chunked Read calls per cycle (poll) or a buffered subscription (subscribe).

Calls are split by the server's OperationLimits, read at every connect (see planning.py).
Notifications are matched to tags by the monitored item's client handle, which the driver
chooses (the tag's index + 1): node ids cannot serve, since two tags may name one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription

from drivers.base import Driver, Publish
from drivers.opcua import nodeids, planning, writes
from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.notifications import NotificationBuffer
from drivers.opcua.reasons import reason
from drivers.opcua.session import open_client
from drivers.opcua.values import quality_of, to_reading, to_value
from gateway.errors import DecodeError, DeviceUnreachable, DriverError, WriteRefused
from gateway.models import Quality, Reading, bad_reading

log = logging.getLogger(__name__)

LIMIT_NODES = (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
               ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)


def good(dv: ua.DataValue) -> bool:
    return quality_of(dv.StatusCode) is Quality.GOOD


class OpcUaDriver(Driver):
    config_model = OpcUaDeviceConfig
    config: OpcUaDeviceConfig

    def __init__(self, config: OpcUaDeviceConfig) -> None:
        super().__init__(config)
        self._client: Client | None = None
        self._node_ids: list[ua.NodeId] = []
        self.limits = planning.OperationLimits()
        self._buffer = NotificationBuffer(config.name, config.max_buffered)
        self._dead: str | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._write_types: dict[int, ua.VariantType | str] = {}  # by tag index: type or why not
        self._arrived = asyncio.Event()  # notifications were buffered since the last drain

    def describe_plan(self) -> str:
        return (f"{self.name}: {len(self.config.tags)} node(s) from "
                f"{self.config.connection.endpoint} by {self.config.mode}")

    async def connect(self) -> None:
        self._dead = None
        client = await open_client(self.config.connection, self.name)
        self._client = client
        try:
            texts = [t.node for t in self.config.tags]
            spaces = (await self._call(client.get_namespace_array())
                      if nodeids.needs_namespaces(texts) else [])
            self._node_ids = [nodeids.resolve(t, spaces) for t in texts]
            self.limits = await self._operation_limits(client)
            self._write_types = await self._data_types(client)
            if self.config.mode == "subscribe":
                await self._subscribe(client)
        except DriverError:
            await self.close()
            raise

    async def _call(self, request: Any) -> Any:
        """Await one service call within the timeout, as a typed gateway error."""
        try:
            return await asyncio.wait_for(request, self.config.connection.timeout)
        except (OSError, TimeoutError, ConnectionError) as exc:
            why = reason(exc, self.config.connection.timeout)
            raise DeviceUnreachable(f"request failed: {why}", self.name) from exc
        except ua.UaStatusCodeError as exc:
            raise DriverError(f"request refused: {reason(exc)}", self.name) from exc

    async def _operation_limits(self, client: Client) -> planning.OperationLimits:
        node_ids = [ua.NodeId(ua.Int32(i)) for i in LIMIT_NODES]
        try:
            answers = await self._read(client, node_ids, 0)
        except DeviceUnreachable:
            raise
        except DriverError as exc:  # a server that refuses to tell sets no limit
            log.debug("%s: operation limits unreadable (%s): none assumed", self.name, exc)
            return planning.OperationLimits()
        values = [dv.Value.Value if dv.Value is not None and good(dv) else 0 for dv in answers]
        limits = planning.OperationLimits(*(planning.limit_of(v) for v in values))
        log.debug("%s: server operation limits %s", self.name, limits)
        return limits

    async def _read(self, client: Client, node_ids: Sequence[ua.NodeId], limit: int,
                    attribute: ua.AttributeIds = ua.AttributeIds.Value) -> list[ua.DataValue]:
        results: list[ua.DataValue] = []
        for chunk in planning.chunked(node_ids, limit):
            params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Both)
            params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attribute) for n in chunk]
            results += await self._call(client.uaclient.read(params))
        return results

    async def _data_types(self, client: Client) -> dict[int, ua.VariantType | str]:
        """The built-in type each writable tag's node takes (its DataType attribute, read at
        every connect: a PLC program download may change it), or why it cannot be written."""
        indexes = [i for i, t in enumerate(self.config.tags) if t.writable]
        try:
            answers = await self._read(client, [self._node_ids[i] for i in indexes],
                                       self.limits.max_nodes_per_read, ua.AttributeIds.DataType)
        except DeviceUnreachable:
            raise
        except DriverError as exc:  # reads go on; writes say why they cannot
            return {i: f"the node's DataType could not be read ({exc})" for i in indexes}
        types: dict[int, ua.VariantType | str] = {}
        for index, dv in zip(indexes, answers, strict=True):
            data_type = dv.Value.Value if good(dv) and dv.Value is not None else None
            vtype = writes.variant_type(data_type)
            if vtype is not None:
                types[index] = vtype
            elif data_type is None:
                status = dv.StatusCode.name if dv.StatusCode is not None else "no value"
                types[index] = f"the node's DataType could not be read ({status})"
            else:
                types[index] = (f"the node's DataType {data_type.to_string()} is not one the "
                                "gateway writes (Boolean, integers, Float, Double, String, "
                                "DateTime)")
        return types

    def writable_tags(self) -> set[str]:
        return {t.name for t in self.config.tags if t.writable}

    async def write(self, tag: str, value: object) -> object:
        """Write the Value attribute in the node's DataType, then read it back. WriteRefused
        (nothing sent) for a value that does not fit; WriteRefused with the server's status
        when the server refuses; DeviceUnreachable when it does not answer."""
        index = self._writable_index(tag)
        if self._client is None:
            raise DeviceUnreachable("not connected", self.name)
        vtype = self._write_types.get(index, "the node's DataType is not known yet")
        if isinstance(vtype, str):
            raise WriteRefused(f"{tag}: {vtype}")
        config, node_id = self.config.tags[index], self._node_ids[index]
        variant = writes.to_variant(value, vtype, config.min, config.max)
        params = ua.WriteParameters(NodesToWrite=[ua.WriteValue(
            NodeId=node_id, AttributeId=ua.AttributeIds.Value, Value=ua.DataValue(variant))])
        try:
            [status] = await self._call(self._client.uaclient.write(params))
        except DeviceUnreachable:
            raise
        except DriverError as exc:  # the whole Write service was refused
            raise WriteRefused(f"the server refused the write: {exc}") from exc
        if not status.is_good():
            raise WriteRefused(f"the server refused the write ({status.name})")
        [dv] = await self._read(self._client, [node_id], 0)
        if not good(dv) or dv.Value is None:
            status_name = dv.StatusCode.name if dv.StatusCode is not None else "no value"
            raise DriverError(f"{tag}: written, but reading it back failed ({status_name})",
                              self.name, tag)
        read_back = to_value(dv.Value.Value)
        if not _same_value(read_back, to_value(variant.Value), vtype):  # clamped or ignored
            raise DecodeError(f"read back {read_back!r} after writing {variant.Value!r}",
                              self.name, tag)
        return read_back

    def _writable_index(self, tag: str) -> int:
        for index, config in enumerate(self.config.tags):
            if config.name == tag:
                if not config.writable:
                    raise WriteRefused(f"{tag} is not writable (its config has no "
                                       "writable: true)")
                return index
        raise WriteRefused(f"{self.name} has no tag {tag}")

    async def _subscribe(self, client: Client) -> None:
        # The subscription's iterator, unbounded (the NotificationBuffer bounds what is kept,
        # counting what it drops), read by one task: asyncua 2.1's handler mode starts a task
        # per notification, a tenth of the gateway's CPU at 5,000 notifications/s.
        sub = await self._call(client.create_subscription(self.config.poll_interval * 1000, None,
                                                          queue_maxsize=0))
        self._consumer = asyncio.create_task(self._consume(sub),
                                             name=f"opcua-notifications:{self.name}")
        requests = [self._item_request(i, node_id) for i, node_id in enumerate(self._node_ids)]
        refused = await self._create_items(sub, requests)
        retries = {i: retry for i, (request, status) in refused.items()
                   if (retry := planning.retry_unfiltered(request, status, self._inherits(i)))}
        for i in retries:
            log.warning("%s: the server refused the device's server_deadband on tag %s (%s); "
                        "subscribed without it (a tag's own server_deadband: 0 turns it off)",
                        self.name, self.config.tags[i].name, refused.pop(i)[1].name)
        refused.update(await self._create_items(sub, list(retries.values())))
        for i, (_, status) in sorted(refused.items()):
            tag = self.config.tags[i]
            self._buffer.append(bad_reading(self.name, tag.name, status.name, tag.unit))

    async def _create_items(self, sub: Any, requests: list[ua.MonitoredItemCreateRequest]
                            ) -> dict[int, tuple[ua.MonitoredItemCreateRequest, ua.StatusCode]]:
        """Create the items in calls of at most MaxMonitoredItemsPerCall; the refused ones, by
        tag index."""
        refused = {}
        for chunk in planning.chunked(requests, self.limits.max_monitored_items_per_call):
            results = await self._call(sub.create_monitored_items(chunk))
            for request, result in zip(chunk, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    index = planning.index_of(request.RequestedParameters.ClientHandle)
                    refused[index] = (request, result)
        return refused

    def _inherits(self, index: int) -> bool:
        """Whether the tag's server-side deadband (if any) is the device's."""
        return self.config.tags[index].server_deadband is None

    def _item_request(self, index: int, node_id: ua.NodeId) -> ua.MonitoredItemCreateRequest:
        tag = self.config.tags[index]
        deadband = planning.server_deadband(tag.server_deadband, tag.server_deadband_type,
                                            self.config.server_deadband,
                                            self.config.server_deadband_type)
        return planning.item_request(index, node_id, deadband, self.config.queue_size,
                                     self.config.sampling_interval * 1000)

    async def _consume(self, sub: Subscription) -> None:
        """Until the subscription is deleted (the iterator ends) or close() cancels it."""
        tags, buffer = self.config.tags, self._buffer
        try:
            async for event in sub:
                if isinstance(event, DataChangeEvent):
                    item = event.data.monitored_item
                    index = planning.index_of(int(item.ClientHandle))
                    if 0 <= index < len(tags):
                        tag = tags[index]
                        buffer.append(to_reading(self.name, tag.name, item.Value, tag.unit))
                        self._arrived.set()
                elif isinstance(event, StatusChangeEvent):
                    self._dead = f"subscription status {event.notification}"
        except Exception as exc:  # the next read() reports it and the session is rebuilt
            log.exception("%s: notification handling failed", self.name)
            self._dead = f"notification handling failed: {reason(exc, typed=True)}"

    @property
    def pushes(self) -> bool:
        """Subscribe mode pushes: notifications go to the runtime as they arrive."""
        return self.config.mode == "subscribe"

    async def subscribe(self, publish: Publish) -> None:
        """Hand each burst of notifications over as it arrives, until the session fails. The
        session is checked at least once per publishing interval while nothing arrives."""
        while True:
            await self._check_session()
            await self._next_notifications(self.config.poll_interval)
            if self._buffer:
                publish(self._buffer.drain())

    async def read(self) -> list[Reading]:
        await self._check_session()
        if self.config.mode == "subscribe":  # a direct caller of a push driver: what arrived
            await self._next_notifications(self.config.poll_interval)
            return self._buffer.drain()
        assert self._client is not None
        results = await self._read(self._client, self._node_ids, self.limits.max_nodes_per_read)
        return [to_reading(self.name, t.name, dv, t.unit)
                for t, dv in zip(self.config.tags, results, strict=True)]

    async def _check_session(self) -> None:
        if self._client is None:
            raise DeviceUnreachable("not connected", self.name)
        try:
            await self._client.check_connection()
        except Exception as exc:  # asyncua raises several types for a dead link
            raise DeviceUnreachable(f"session lost: {reason(exc)}", self.name) from exc
        if self._dead:
            raise DeviceUnreachable(self._dead, self.name)

    async def _next_notifications(self, timeout: float) -> None:
        """Wait until notifications are buffered, or `timeout` passed."""
        if self._buffer:
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout)

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 2)
            except Exception:  # close never raises; the link may already be gone
                log.debug("disconnect of %s failed", self.name, exc_info=True)


def _same_value(read_back: object, written: object, vtype: ua.VariantType) -> bool:
    """A Float node holds a float32: compare at that precision (1234.5678 reads back as
    1234.5677...)."""
    if vtype is ua.VariantType.Float and isinstance(read_back, float) and isinstance(
            written, float):
        pack = struct.Struct("<f")
        return pack.pack(read_back) == pack.pack(written)
    return read_back == written
