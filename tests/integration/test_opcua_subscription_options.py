"""Operation limits, server-side deadbands and the notification buffer, against the simulator."""

import asyncio
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.server.monitored_item_service import MonitoredItemService

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.notifications import DROPPED
from drivers.opcua.planning import OperationLimits
from gateway.errors import DriverError
from gateway.metrics import COUNTERS
from gateway.models import Quality
from simulators.opcua import OpcUaSimulator
from simulators.opcua.server import TYPED
from tests.integration.test_opcua_driver import collect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def make(endpoint: str, mode: str, tags: list[dict[str, Any]], **device: Any) -> OpcUaDriver:
    cfg = OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": mode, "poll_interval": "100ms",
        "connection": {"endpoint": endpoint, "timeout": "2s"}, "tags": tags, **device})
    return OpcUaDriver(cfg)


def many_tags(count: int) -> list[dict[str, Any]]:
    names = [n for n, _, _ in TYPED]
    return [{"name": f"t{i}", "node": f"ns=2;s={names[i % len(names)]}"} for i in range(count)]


async def test_25_tags_with_max_nodes_per_read_10_take_3_reads_a_cycle(
        opcua_sim: OpcUaSimulator) -> None:
    await opcua_sim.set_operation_limits(10, 0)
    driver = make(opcua_sim.endpoint, "poll", many_tags(25))
    await driver.connect()
    try:
        assert driver.limits == OperationLimits(10, 0)
        opcua_sim.read_sizes.clear()
        readings = await driver.read()
        assert opcua_sim.read_sizes == [10, 10, 5]
        assert [r.tag for r in readings] == [f"t{i}" for i in range(25)]
        assert all(r.quality is Quality.GOOD for r in readings)
        driver.limits = OperationLimits()  # as if the limit were ignored: the server refuses
        with pytest.raises(DriverError, match="BadTooManyOperations"):
            await driver.read()
    finally:
        await driver.close()


async def test_monitored_items_are_created_in_calls_of_max_monitored_items_per_call(
        opcua_sim: OpcUaSimulator) -> None:
    await opcua_sim.set_operation_limits(0, 10)
    driver = make(opcua_sim.endpoint, "subscribe", many_tags(25))
    await driver.connect()
    try:
        got = await collect(driver, 0.5)
    finally:
        await driver.close()
    assert opcua_sim.monitored_item_calls == [10, 10, 5]
    assert {r.tag for r in got if r.quality is Quality.GOOD} == {f"t{i}" for i in range(25)}


async def test_no_limits_announced_means_one_read_for_all(opcua_sim: OpcUaSimulator) -> None:
    await opcua_sim.set_operation_limits(0, 0)
    driver = make(opcua_sim.endpoint, "poll", many_tags(25))
    await driver.connect()
    try:
        opcua_sim.read_sizes.clear()
        await driver.read()
    finally:
        await driver.close()
    assert opcua_sim.read_sizes == [25]


async def test_an_absolute_server_deadband_holds_back_small_changes(
        opcua_sim: OpcUaSimulator) -> None:
    """The simulated spindle speed jitters by at most 100 rpm around 12000 every 50 ms."""
    driver = make(opcua_sim.endpoint, "subscribe", [
        {"name": "damped", "node": "ns=2;s=Cnc.SpindleSpeed"},
        {"name": "raw", "node": "ns=2;s=Cnc.SpindleSpeed", "server_deadband": 0}],
        server_deadband=1000)
    await driver.connect()
    try:
        await asyncio.sleep(0.3)  # past the start-up jump from 0 to 12000 rpm
        got = await collect(driver, 1.0, every_tag=False)  # a fixed window: counts in it
    finally:
        await driver.close()
    assert len([r for r in got if r.tag == "raw"]) >= 5
    assert len([r for r in got if r.tag == "damped"]) <= 1


async def test_a_percent_server_deadband_is_sent_and_accepted(
        opcua_sim: OpcUaSimulator) -> None:
    """asyncua's server accepts a percent filter and ignores it (it logs "not implemented");
    a server that needs an EURange refuses the item, which then reads bad with its status."""
    filters: list[Any] = []

    def on_items(event: ServerItemCallback, _: object) -> None:
        filters.extend(i.RequestedParameters.Filter for i in event.request_params.ItemsToCreate)

    assert opcua_sim._server is not None
    opcua_sim._server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, on_items)
    driver = make(opcua_sim.endpoint, "subscribe", [
        {"name": "speed", "node": "ns=2;s=Cnc.SpindleSpeed", "server_deadband": 5,
         "server_deadband_type": "percent"}])
    await driver.connect()
    try:
        got = await collect(driver, 0.5)
    finally:
        await driver.close()
    assert [(f.Trigger, f.DeadbandType, f.DeadbandValue) for f in filters] == [
        (ua.DataChangeTrigger.StatusValue, ua.DeadbandType.Percent, 5.0)]
    assert got and all(r.quality is Quality.GOOD for r in got)


async def test_past_max_buffered_the_oldest_notifications_are_dropped_and_counted(
        opcua_sim: OpcUaSimulator) -> None:
    before = COUNTERS.get(DROPPED, device="cnc")
    driver = make(opcua_sim.endpoint, "subscribe", many_tags(15), max_buffered=5)
    await driver.connect()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while COUNTERS.get(DROPPED, device="cnc") - before < 10 and loop.time() < deadline:
            await asyncio.sleep(0.05)  # the 15 first notifications arrive, 10 past the 5 kept
        kept = await driver.read()
    finally:
        await driver.close()
    assert len(kept) == 5
    assert COUNTERS.get(DROPPED, device="cnc") - before >= 10


@pytest.fixture
def strict_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the simulator refuse a deadband on a String or Boolean node, as OPC UA Part 4
    says a server should (asyncua 2.1 accepts it)."""
    create = MonitoredItemService._create_data_change_monitored_item

    async def refusing(service: MonitoredItemService,
                       item: ua.MonitoredItemCreateRequest) -> ua.MonitoredItemCreateResult:
        # decoded as asyncua.ua.uaprotocol_auto.DataChangeFilter, not ua.DataChangeFilter
        if hasattr(item.RequestedParameters.Filter, "DeadbandType"):
            dv = service.aspace.read_attribute_value(item.ItemToMonitor.NodeId,
                                                     ua.AttributeIds.Value)
            if isinstance(dv.Value.Value if dv.Value else None, str | bool):
                return ua.MonitoredItemCreateResult(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadFilterNotAllowed))
        return await create(service, item)

    monkeypatch.setattr(MonitoredItemService, "_create_data_change_monitored_item", refusing)


@pytest.mark.usefixtures("strict_filters")
async def test_a_device_deadband_the_server_refuses_on_a_text_tag_is_dropped_for_that_tag(
        opcua_sim: OpcUaSimulator, caplog: pytest.LogCaptureFixture) -> None:
    driver = make(opcua_sim.endpoint, "subscribe", [
        {"name": "speed", "node": "ns=2;s=Cnc.SpindleSpeed"},
        {"name": "program", "node": "ns=2;s=Cnc.Program"},
        {"name": "flag", "node": "ns=2;s=Types.Boolean", "server_deadband": 1}],
        server_deadband=1)
    await driver.connect()
    try:
        got = await collect(driver, 0.5)
    finally:
        await driver.close()
    assert any(r.tag == "program" and r.value == "O1000" for r in got)
    assert any(r.tag == "speed" and r.quality is Quality.GOOD for r in got)
    flag = [r for r in got if r.tag == "flag"]  # its own deadband: the refusal stands
    assert flag and all(r.error == "BadFilterNotAllowed" for r in flag)
    warned = [r.getMessage() for r in caplog.records if "refused the device's" in r.getMessage()]
    assert len(warned) == 1 and "program" in warned[0]
