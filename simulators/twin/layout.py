"""From a gateway config to the layout of its twins (pure): which servers to start, which
unit ids, tables, registers and nodes they hold, and how each value moves.

Devices that share one Modbus `host:port` (or one serial line) become unit ids of one twin
server; devices that share one OPC UA endpoint share one twin server. Tags of other drivers
have no twin (listed in `TwinLayout.skipped`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import ua

from drivers.modbus.config import ModbusDeviceConfig, ModbusTag
from drivers.opcua import nodeids
from drivers.opcua.config import OpcUaDeviceConfig
from gateway.config import GatewayConfig
from simulators.twin.values import Motion, motion_for

# OPC UA variant types a node's name may spell (as in `ns=2;s=Types.Int16`): longest first, so
# that "UInt16" is not read as "Int16".
_VARIANTS = sorted(("Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64",
                    "UInt64", "Float", "Double", "String", "DateTime", "ByteString"),
                   key=len, reverse=True)
_STRING_WORDS = ("state", "program", "alarm", "recipe", "mode", "name", "message", "text",
                 "status_text", "batch", "order", "article", "serial")
_BOOL_WORDS = ("running", "enabled", "active", "open", "closed", "ready", "is_", "on", "ok")
_COUNT_WORDS = ("count", "counter", "total", "parts", "pieces")
VARIANT_TO_BEHAVIOUR_TYPE = {"Boolean": "bool", "String": "string", "SByte": "sbyte",
                             "Byte": "byte", "Int16": "int16", "UInt16": "uint16",
                             "Int32": "int32", "UInt32": "uint32", "Int64": "int64",
                             "UInt64": "uint64", "Float": "float32", "Double": "float64",
                             "DateTime": "datetime", "ByteString": "bytes"}


@dataclass(frozen=True)
class RegisterTag:
    """One Modbus tag as the twin serves it."""

    name: str
    table: str
    address: int
    type: str
    byte_order: str
    word_order: str
    length: int | None
    bit: int | None
    scale: float
    offset: float
    motion: Motion


@dataclass
class ModbusUnitPlan:
    device: str
    unit_id: int
    tags: list[RegisterTag]


@dataclass
class ModbusServerPlan:
    """One twin Modbus TCP server: the configured place it stands in for and its units."""

    place: str  # "host:port" or the serial device
    units: dict[int, ModbusUnitPlan] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePlan:
    """One OPC UA variable as the twin serves it."""

    device: str
    tag: str
    node: str  # as written in the config
    namespace_uri: str | None
    namespace_index: int
    identifier: Any
    id_type: str  # String | Numeric | Guid | ByteString
    variant: str  # an asyncua VariantType name
    array: bool
    motion: Motion


@dataclass
class OpcUaServerPlan:
    endpoint: str
    devices: dict[str, str] = field(default_factory=dict)  # device -> mode
    nodes: list[NodePlan] = field(default_factory=list)
    poll_interval: float = 1.0  # the shortest of its devices'

    @property
    def namespace_uris(self) -> list[str]:
        return sorted({n.namespace_uri for n in self.nodes if n.namespace_uri})

    @property
    def highest_index(self) -> int:
        return max((n.namespace_index for n in self.nodes if not n.namespace_uri), default=0)


@dataclass
class TwinLayout:
    modbus: dict[str, ModbusServerPlan] = field(default_factory=dict)
    opcua: dict[str, OpcUaServerPlan] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # devices without a twin, and why


def build_layout(config: GatewayConfig) -> TwinLayout:
    layout = TwinLayout()
    for device in config.devices:
        if isinstance(device, ModbusDeviceConfig):
            _add_modbus(layout, device)
        elif isinstance(device, OpcUaDeviceConfig):
            _add_opcua(layout, device)
        else:
            layout.skipped.append(f"{device.name}: driver {device.driver} has no twin")
    return layout


def modbus_place(device: ModbusDeviceConfig) -> str:
    connection = device.connection
    return connection.serial or f"{connection.host}:{connection.port}"


def _add_modbus(layout: TwinLayout, device: ModbusDeviceConfig) -> None:
    place = modbus_place(device)
    server = layout.modbus.setdefault(place, ModbusServerPlan(place))
    unit_id = device.connection.unit_id
    if unit_id in server.units:
        layout.skipped.append(f"{device.name}: unit {unit_id} at {place} is already "
                              f"{server.units[unit_id].device}'s")
        return
    server.units[unit_id] = ModbusUnitPlan(device.name, unit_id,
                                           [register_tag(t) for t in device.tags])


def register_tag(tag: ModbusTag) -> RegisterTag:
    motion = motion_for(tag.name, tag.type, low=tag.min, high=tag.max, length=tag.length,
                        scale=tag.scale, offset=tag.offset)
    return RegisterTag(tag.name, tag.table, tag.address, tag.type, tag.byte_order,
                       tag.word_order, tag.length, tag.bit, tag.scale, tag.offset, motion)


def _add_opcua(layout: TwinLayout, device: OpcUaDeviceConfig) -> None:
    endpoint = device.connection.endpoint
    server = layout.opcua.setdefault(endpoint, OpcUaServerPlan(endpoint, poll_interval=9e9))
    server.devices[device.name] = device.mode
    server.poll_interval = min(server.poll_interval, device.poll_interval)
    taken = {(n.namespace_uri, n.namespace_index, n.identifier) for n in server.nodes}
    for tag in device.tags:
        plan = node_plan(device.name, tag.name, tag.node)
        if plan.namespace_index == 0 and not plan.namespace_uri:
            layout.skipped.append(f"{device.name}.{tag.name}: {tag.node} is a standard node "
                                  "(namespace 0): the twin's server answers it itself")
            continue
        key = (plan.namespace_uri, plan.namespace_index, plan.identifier)
        if key in taken:
            layout.skipped.append(f"{device.name}.{tag.name}: {tag.node} is served already")
            continue
        taken.add(key)
        server.nodes.append(plan)


def node_plan(device: str, tag: str, node: str) -> NodePlan:
    parsed = nodeids.parse(node)
    uri = getattr(parsed, "NamespaceUri", None) or None
    variant, array = variant_of(tag, str(parsed.Identifier))
    motion = motion_for(tag, VARIANT_TO_BEHAVIOUR_TYPE[variant], length=16)
    return NodePlan(device, tag, node, uri, int(parsed.NamespaceIndex), parsed.Identifier,
                    ua.NodeIdType(parsed.NodeIdType).name.replace("FourByte", "Numeric")
                    .replace("TwoByte", "Numeric"), variant, array, motion)


def variant_of(tag: str, identifier: str) -> tuple[str, bool]:
    """The variant type of a node the config names (OPC UA tags carry no type: the driver reads
    the DataType at connect): one spelled in the identifier (`Types.UInt16`), else one guessed
    from the tag's name (state/program/alarm: String; running/enabled: Boolean; counters:
    UInt32), else Double. `Array` or `Axes` in it makes a three-element array."""
    array = "array" in identifier.lower() or identifier.lower().endswith("axes")
    for variant in _VARIANTS:
        if variant.lower() in [w.lower() for w in _words(identifier)]:
            return variant, array
        if identifier.endswith(variant) or f"{variant}Array" in identifier:
            return variant, array
    words = _words(tag.lower())
    if any(w in _STRING_WORDS for w in words):
        return "String", array
    if any(w in _COUNT_WORDS for w in words) or tag.lower().endswith("_sequence"):
        return "UInt32", array
    if any(w in _BOOL_WORDS for w in words) or tag.startswith("is_"):
        return "Boolean", array
    return "Double", array


def _words(text: str) -> list[str]:
    import re

    return [w for w in re.split(r"[._\-\s/]+", text) if w]


def unit_count(layout: TwinLayout) -> int:
    return sum(len(s.units) for s in layout.modbus.values())
