"""Array variables of every value type, through the driver in both modes."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from gateway.models import Quality, Reading
from simulators.opcua import OpcUaSimulator
from simulators.opcua.server import NS_URI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

T = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
# (name, variant type, server value, expected Reading.value)
ARRAYS: list[tuple[str, ua.VariantType, list[Any], tuple[Any, ...]]] = [
    ("Boolean", ua.VariantType.Boolean, [True, False], (True, False)),
    ("SByte", ua.VariantType.SByte, [-1, 2], (-1, 2)),
    ("Byte", ua.VariantType.Byte, [0, 255], (0, 255)),
    ("Int16", ua.VariantType.Int16, [-300, 300], (-300, 300)),
    ("UInt16", ua.VariantType.UInt16, [60000], (60000,)),
    ("Int32", ua.VariantType.Int32, [-70000, 1], (-70000, 1)),
    ("UInt32", ua.VariantType.UInt32, [4_000_000_000], (4_000_000_000,)),
    ("Int64", ua.VariantType.Int64, [-(2**40)], (-(2**40),)),
    ("UInt64", ua.VariantType.UInt64, [2**63], (2**63,)),
    ("Float", ua.VariantType.Float, [1.5, -0.25], (1.5, -0.25)),
    ("Double", ua.VariantType.Double, [2.25], (2.25,)),
    ("String", ua.VariantType.String, ["a", "b"], ("a", "b")),
    ("DateTime", ua.VariantType.DateTime, [T], ("2026-01-02T03:04:05.123456Z",)),
    ("ByteString", ua.VariantType.ByteString, [b"\x00\x01\xff"], ("AAH/",)),
    ("Empty", ua.VariantType.Double, [], ()),
]


async def add_arrays(sim: OpcUaSimulator) -> None:
    """Array variables the simulator's own address space lacks (it has Double arrays only)."""
    server = sim._server
    assert server is not None
    idx = await server.get_namespace_index(NS_URI)
    folder = await server.nodes.objects.add_object(ua.NodeId("Arrays", idx), "Arrays")
    for name, vtype, value, _ in ARRAYS:
        await folder.add_variable(ua.NodeId(f"Arrays.{name}", idx), name,
                                  ua.Variant(value, vtype, is_array=True))


def make(endpoint: str, mode: str) -> OpcUaDriver:
    tags = [{"name": name, "node": f"ns=2;s=Arrays.{name}"} for name, *_ in ARRAYS]
    tags.append({"name": "axes", "node": "ns=2;s=Cnc.Axes"})
    cfg = OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": mode, "poll_interval": "100ms",
        "connection": {"endpoint": endpoint, "timeout": "2s"}, "tags": tags})
    return OpcUaDriver(cfg)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_arrays_of_every_type_arrive_as_tuples(opcua_sim: OpcUaSimulator,
                                                     mode: str) -> None:
    await add_arrays(opcua_sim)
    driver = make(opcua_sim.endpoint, mode)
    await driver.connect()
    got: dict[str, Reading] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10  # until every array has arrived once (a busy box is slow)
    wanted = {name for name, *_ in ARRAYS} | {"axes"}
    try:
        while loop.time() < deadline and not wanted <= got.keys():
            got.update({r.tag: r for r in await driver.read()})
            await asyncio.sleep(0.1)
    finally:
        await driver.close()
    assert {name: got[name].value for name, *_ in ARRAYS} == {
        name: expected for name, _, _, expected in ARRAYS}
    axes = got["axes"]
    assert axes.quality is Quality.GOOD and isinstance(axes.value, tuple)
    assert len(axes.value) == 3
