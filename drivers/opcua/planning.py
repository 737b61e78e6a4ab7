"""Splitting OPC UA service calls by the server's OperationLimits (pure: no I/O).

A server announces how many nodes one Read may carry (MaxNodesPerRead) and how many monitored
items one CreateMonitoredItems may create (MaxMonitoredItemsPerCall) under
Server/ServerCapabilities/OperationLimits. A request past the limit is refused whole with
BadTooManyOperations, so the driver splits its calls into chunks of at most that many.
0, a missing node or an unreadable value means no limit (OPC UA Part 5, 6.3.11).

It also builds the monitored-item requests of a subscription (pure data: asyncua's `ua` types).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from asyncua import ua

T = TypeVar("T")


@dataclass(frozen=True)
class OperationLimits:
    """The limits the driver obeys; 0 means unlimited."""

    max_nodes_per_read: int = 0
    max_monitored_items_per_call: int = 0


def limit_of(value: object) -> int:
    """A limit read from the server: a positive integer, else 0 (unlimited)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def chunked(items: Sequence[T], limit: int) -> list[Sequence[T]]:
    """`items` in order, in slices of at most `limit` (0: one slice); no empty slices."""
    if not items:
        return []
    if limit <= 0:
        return [items]
    return [items[start:start + limit] for start in range(0, len(items), limit)]


@dataclass(frozen=True)
class ServerDeadband:
    """A server-side DataChangeFilter deadband: absolute (in the value's unit) or percent (of
    the node's EURange)."""

    value: float
    kind: str = "absolute"


def server_deadband(value: float | None, kind: str | None, device_value: float | None,
                    device_kind: str) -> ServerDeadband | None:
    """The tag's own deadband where it sets one, else the device's; None: no filter (0 is no
    filter too: every change is reported either way, and a String node accepts it)."""
    chosen = value if value is not None else device_value
    if not chosen:
        return None
    return ServerDeadband(chosen, kind or device_kind)


def data_change_filter(deadband: ServerDeadband | None) -> ua.DataChangeFilter | None:
    if deadband is None:
        return None
    kinds = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}
    return ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                               DeadbandType=kinds[deadband.kind],
                               DeadbandValue=deadband.value)


def handle_of(index: int) -> int:
    """The client handle of the tag at `index`: notifications are matched by it (0 is avoided,
    some servers treat it as unset)."""
    return index + 1


def index_of(handle: int) -> int:
    return handle - 1


def item_request(index: int, node_id: ua.NodeId, deadband: ServerDeadband | None,
                 queue_size: int, sampling_ms: float) -> ua.MonitoredItemCreateRequest:
    """A Value monitored item for the tag at `index`, reporting source and server time."""
    params = ua.MonitoringParameters(ClientHandle=ua.UInt32(handle_of(index)),
                                     SamplingInterval=ua.Double(sampling_ms),
                                     QueueSize=ua.UInt32(queue_size), DiscardOldest=True)
    flt = data_change_filter(deadband)
    if flt is not None:
        params.Filter = flt
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)


# What a server answers for a filter it will not apply to a node: a deadband on a String or
# Boolean (OPC UA Part 4, 7.22.2), a percent deadband on a node without an EURange.
FILTER_REFUSALS = frozenset({ua.StatusCodes.BadFilterNotAllowed,
                             ua.StatusCodes.BadMonitoredItemFilterUnsupported,
                             ua.StatusCodes.BadMonitoredItemFilterInvalid,
                             ua.StatusCodes.BadDeadbandFilterInvalid})


def retry_unfiltered(request: ua.MonitoredItemCreateRequest, status: ua.StatusCode,
                     inherited: bool) -> ua.MonitoredItemCreateRequest | None:
    """The same item without its filter when the server refused only the filter and the
    deadband came from the device (one device-wide deadband over numeric and text tags);
    None when the refusal stands (a tag's own deadband is what its author asked for)."""
    if not inherited or status.value not in FILTER_REFUSALS:
        return None
    params = request.RequestedParameters
    unfiltered = ua.MonitoringParameters(ClientHandle=params.ClientHandle,
                                         SamplingInterval=params.SamplingInterval,
                                         QueueSize=params.QueueSize,
                                         DiscardOldest=params.DiscardOldest)
    return ua.MonitoredItemCreateRequest(ItemToMonitor=request.ItemToMonitor,
                                         MonitoringMode=request.MonitoringMode,
                                         RequestedParameters=unfiltered)
