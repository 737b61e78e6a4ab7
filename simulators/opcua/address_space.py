"""The simulator's address space: which variables exist, where, and with which units.

Every variable's node id is `ns=<urn:shopfloor:cnc>;s=<dotted name>`, and its place in the tree
follows the dots: `Cnc.Position.X` is the variable `X` in the object `Position` in the object
`Cnc` under Objects. Numeric CNC variables carry the `EngineeringUnits` (EUInformation with the
UNECE Rec. 20 code, as OPC UA Part 8 specifies) and `EURange` properties of an analog item, so
`gateway discover` can find units the way it would on a real machine tool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, Server, ua

from simulators.opcua.machines import MAX_FEED_RATE, MAX_SPINDLE_SPEED, TRAVEL, Cnc

NS_URI = "urn:shopfloor:cnc"
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"


@dataclass(frozen=True)
class Unit:
    """A UNECE Rec. 20 unit: its common code, its symbol (the DisplayName) and its name."""

    code: str
    symbol: str
    name: str

    @property
    def unit_id(self) -> int:
        """OPC UA Part 8: the code's ASCII characters packed into an Int32, first one highest."""
        value = 0
        for char in self.code:
            value = value << 8 | ord(char)
        return value

    def information(self) -> ua.EUInformation:
        return ua.EUInformation(NamespaceUri=UNECE_NAMESPACE, UnitId=self.unit_id,
                                DisplayName=ua.LocalizedText(self.symbol, "en"),
                                Description=ua.LocalizedText(self.name, "en"))


RPM = Unit("M46", "r/min", "revolution per minute")
PERCENT = Unit("P1", "%", "percent")
MILLIMETRE = Unit("MMT", "mm", "millimetre")
MM_PER_MINUTE = Unit("H81", "mm/min", "millimetre per minute")
PIECE = Unit("H87", "pcs", "piece")


@dataclass(frozen=True)
class Variable:
    name: str  # the string identifier; its dots give the place in the tree
    vtype: ua.VariantType
    initial: Any
    unit: Unit | None = None
    range: tuple[float, float] | None = None  # EURange: the values a client should expect
    writable: bool = False  # clients may write it (a setpoint); every other node is read-only


CNC: list[Variable] = [
    Variable("Cnc.State", ua.VariantType.String, "RUNNING"),
    Variable("Cnc.Program", ua.VariantType.String, "O1000"),
    Variable("Cnc.Alarm", ua.VariantType.String, ""),
    Variable("Cnc.SpindleSpeed", ua.VariantType.Double, 0.0, RPM, (0.0, MAX_SPINDLE_SPEED)),
    Variable("Cnc.SpindleLoad", ua.VariantType.Double, 0.0, PERCENT, (0.0, 150.0)),
    Variable("Cnc.FeedRate", ua.VariantType.Double, 0.0, MM_PER_MINUTE, (0.0, MAX_FEED_RATE)),
    Variable("Cnc.PartCounter", ua.VariantType.UInt32, 0, PIECE),
    Variable("Cnc.Axes", ua.VariantType.Double, [0.0, 0.0, 0.0], MILLIMETRE),
    *(Variable(f"Cnc.Position.{axis.upper()}", ua.VariantType.Double, 0.0, MILLIMETRE, travel)
      for axis, travel in TRAVEL.items()),
]

# Setpoints a client may write; the machine model follows them (see Cnc.spindle_setpoint).
SETPOINTS: list[Variable] = [
    Variable("Cnc.Setpoints.SpindleSpeed", ua.VariantType.Double, 0.0, RPM,
             (0.0, MAX_SPINDLE_SPEED), writable=True),
    Variable("Cnc.Setpoints.SpindleOverride", ua.VariantType.Int32, 100, PERCENT, (50.0, 150.0),
             writable=True),
]

# One node of every value type (initial values never change), for the driver's decoding tests.
TYPED: list[tuple[str, ua.VariantType, Any]] = [
    ("Types.Boolean", ua.VariantType.Boolean, True),
    ("Types.SByte", ua.VariantType.SByte, -5),
    ("Types.Byte", ua.VariantType.Byte, 200),
    ("Types.Int16", ua.VariantType.Int16, -300),
    ("Types.UInt16", ua.VariantType.UInt16, 60000),
    ("Types.Int32", ua.VariantType.Int32, -70000),
    ("Types.UInt32", ua.VariantType.UInt32, 4_000_000_000),
    ("Types.Int64", ua.VariantType.Int64, -(2**40)),
    ("Types.UInt64", ua.VariantType.UInt64, 2**63),
    ("Types.Float", ua.VariantType.Float, 1.5),
    ("Types.Double", ua.VariantType.Double, 2.25),
    ("Types.String", ua.VariantType.String, "hello"),
    ("Types.DateTime", ua.VariantType.DateTime, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ("Types.ByteString", ua.VariantType.ByteString, b"\x00\x01\xff"),
    ("Types.DoubleArray", ua.VariantType.Double, [1.0, 2.0, 3.0]),
]
VARIABLES: list[Variable] = [*CNC, *SETPOINTS, *(Variable(n, t, v) for n, t, v in TYPED)]
VARIANT_TYPES = {v.name: v.vtype for v in VARIABLES}


def cnc_values(machine: Cnc) -> dict[str, Any]:
    """The machine's current values by variable name (every CNC variable, nothing else)."""
    return {
        "Cnc.State": machine.state, "Cnc.Program": machine.program, "Cnc.Alarm": machine.alarm,
        "Cnc.SpindleSpeed": machine.spindle_speed, "Cnc.SpindleLoad": machine.spindle_load,
        "Cnc.FeedRate": machine.feed_rate, "Cnc.PartCounter": machine.parts,
        "Cnc.Axes": [machine.x, machine.y, machine.z],
        "Cnc.Position.X": machine.x, "Cnc.Position.Y": machine.y, "Cnc.Position.Z": machine.z,
    }


def gateway_tags() -> list[dict[str, Any]]:
    """The CNC's tags as a gateway config writes them (`gateway demo`, config/opcua-demo.yaml):
    snake_case names, namespace-URI node ids, the units the server declares; last, the spindle
    speed setpoint, writable within its EURange."""
    tags: list[dict[str, Any]] = []
    for variable in CNC:
        words = variable.name.removeprefix("Cnc.").replace(".", "_")
        tag = {"name": re.sub(r"(?<=[a-z])(?=[A-Z])", "_", words).lower(),
               "node": f"nsu={NS_URI};s={variable.name}"}
        if variable.unit is not None:
            tag["unit"] = variable.unit.symbol
        tags.append(tag)
    return [*tags, DEMO_SETPOINT]


# The one setpoint `gateway demo` and config/opcua-demo.yaml make writable (0: the program's).
DEMO_SETPOINT: dict[str, Any] = {
    "name": "spindle_speed_setpoint", "node": f"nsu={NS_URI};s=Cnc.Setpoints.SpindleSpeed",
    "unit": RPM.symbol, "writable": True, "min": 0, "max": MAX_SPINDLE_SPEED}


async def build(server: Server, ns: int) -> dict[str, Node]:
    """Create every variable (and the objects holding them); the variables by name."""
    objects: dict[str, Node] = {"": server.nodes.objects}
    nodes: dict[str, Node] = {}
    for variable in VARIABLES:
        parent_name, _, browse_name = variable.name.rpartition(".")
        parent = await _object(objects, parent_name, ns)
        node = await parent.add_variable(_node_id(variable.name, ns), ua.QualifiedName(
            browse_name, ns), variable.initial, variable.vtype)
        if isinstance(variable.initial, list):  # asyncua leaves an array's ValueRank at Scalar
            await node.write_value_rank(ua.ValueRank.OneDimension)
        await _add_analog_properties(node, variable, ns)
        if variable.writable:
            await node.set_writable()
        nodes[variable.name] = node
    return nodes


async def _object(objects: dict[str, Node], name: str, ns: int) -> Node:
    """The object `name` (dotted), created with its parents on first use."""
    if name not in objects:
        parent_name, _, browse_name = name.rpartition(".")
        parent = await _object(objects, parent_name, ns)
        objects[name] = await parent.add_object(_node_id(name, ns),
                                                ua.QualifiedName(browse_name, ns))
    return objects[name]


async def _add_analog_properties(node: Node, variable: Variable, ns: int) -> None:
    # Standard property browse names live in namespace 0, whatever the node's namespace.
    if variable.unit is not None:
        await node.add_property(_node_id(f"{variable.name}.EngineeringUnits", ns),
                                ua.QualifiedName("EngineeringUnits", 0),
                                variable.unit.information(), ua.VariantType.ExtensionObject,
                                ua.ObjectIds.EUInformation)
    if variable.range is not None:
        low, high = variable.range
        await node.add_property(_node_id(f"{variable.name}.EURange", ns),
                                ua.QualifiedName("EURange", 0), ua.Range(low, high),
                                ua.VariantType.ExtensionObject, ua.ObjectIds.Range)


def _node_id(name: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(ns))
