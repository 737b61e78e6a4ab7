"""The OPC UA simulator as a client sees it: units on the analog items, its fault switch that
drops every session while the server keeps running, and config/opcua-demo.yaml against it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from asyncua import Client

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from gateway.errors import DeviceUnreachable
from gateway.models import Quality
from simulators.opcua import OpcUaSimulator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]


async def test_analog_items_carry_engineering_units_and_range(opcua_sim: OpcUaSimulator) -> None:
    async with Client(opcua_sim.endpoint, timeout=3) as client:
        speed = client.get_node("ns=2;s=Cnc.SpindleSpeed")
        units = await (await speed.get_child("0:EngineeringUnits")).read_value()
        limits = await (await speed.get_child("0:EURange")).read_value()
        state = await client.get_node("ns=2;s=Cnc.State").read_value()
    assert units.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    assert units.DisplayName.Text == "r/min" and units.UnitId == 0x4D3436  # "M46"
    assert (limits.Low, limits.High) == (0.0, 18000.0)
    assert state in ("RUNNING", "IDLE", "ALARM")


async def test_dropped_sessions_are_noticed_and_the_server_still_answers(
        opcua_sim: OpcUaSimulator) -> None:
    cfg = OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": "poll", "poll_interval": "100ms",
        "connection": {"endpoint": opcua_sim.endpoint, "timeout": "2s"},
        "tags": [{"name": "parts", "node": "ns=2;s=Cnc.PartCounter"}]})
    driver = OpcUaDriver(cfg)
    await driver.connect()
    try:
        assert opcua_sim.drop_sessions() >= 1
        with pytest.raises(DeviceUnreachable):
            for _ in range(50):
                await driver.read()
                await asyncio.sleep(0.1)
        await driver.close()
        await driver.connect()
        readings = await driver.read()
    finally:
        await driver.close()
    assert readings and readings[0].quality is Quality.GOOD


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_opcua_demo_config_reads_every_tag_good(opcua_sim: OpcUaSimulator,
                                                       mode: str) -> None:
    """config/opcua-demo.yaml as it is, only pointed at this test's port."""
    device = yaml.safe_load((ROOT / "config" / "opcua-demo.yaml").read_text())["devices"][0]
    device["connection"]["endpoint"] = opcua_sim.endpoint
    device["mode"] = mode
    driver = OpcUaDriver(OpcUaDeviceConfig.model_validate(device))
    await driver.connect()
    got: dict[str, Quality] = {}
    try:
        for _ in range(30):
            got.update({r.tag: r.quality for r in await driver.read()})
            if len(got) == len(device["tags"]):
                break
            await asyncio.sleep(0.1)
    finally:
        await driver.close()
    assert got == {t["name"]: Quality.GOOD for t in device["tags"]}
