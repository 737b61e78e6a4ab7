import asyncio

import pytest

from drivers.opcua.config import OpcUaDeviceConfig
from drivers.opcua.driver import OpcUaDriver
from gateway.errors import DeviceUnreachable
from gateway.models import Quality, Reading
from simulators.opcua import OpcUaSimulator
from simulators.opcua.server import TYPED
from tests.tcp_proxy import SilentableProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXPECTED = {
    "Types_Boolean": True, "Types_SByte": -5, "Types_Byte": 200, "Types_Int16": -300,
    "Types_UInt16": 60000, "Types_Int32": -70000, "Types_UInt32": 4_000_000_000,
    "Types_Int64": -(2**40), "Types_UInt64": 2**63, "Types_Float": 1.5, "Types_Double": 2.25,
    "Types_String": "hello", "Types_DateTime": "2026-01-02T03:04:05.000000Z",
    "Types_ByteString": "AAH/", "Types_DoubleArray": (1.0, 2.0, 3.0),
}


def make(endpoint: str, mode: str, extra: list[dict[str, str]] | None = None) -> OpcUaDriver:
    tags = [{"name": n.replace(".", "_"), "node": f"ns=2;s={n}"} for n, _, _ in TYPED]
    tags.append({"name": "speed", "node": "ns=2;s=Cnc.SpindleSpeed", "unit": "rpm"})
    cfg = OpcUaDeviceConfig.model_validate({
        "name": "cnc", "driver": "opcua", "mode": mode, "poll_interval": "100ms",
        "connection": {"endpoint": endpoint, "timeout": "2s"}, "tags": tags + (extra or [])})
    return OpcUaDriver(cfg)


async def collect(driver: OpcUaDriver, seconds: float, *,
                  every_tag: bool = True) -> list[Reading]:
    """What the driver reads in `seconds` (a read every 0.1 s); with `every_tag`, on until every
    configured tag has been read once, within 10 s: a busy box can hold the first notifications
    back past a short window."""
    out: list[Reading] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    wanted = {t.name for t in driver.config.tags}
    while loop.time() - started < seconds or (
            every_tag and loop.time() - started < 10 and not wanted <= {r.tag for r in out}):
        out += await driver.read()
        await asyncio.sleep(0.1)
    return out


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_every_value_type_arrives_with_its_value(opcua_sim: OpcUaSimulator,
                                                        mode: str) -> None:
    driver = make(opcua_sim.endpoint, mode)
    await driver.connect()
    try:
        got = {r.tag: r for r in await collect(driver, 0.6)}
    finally:
        await driver.close()
    assert {t: got[t].value for t in EXPECTED} == EXPECTED
    assert got["speed"].quality is Quality.GOOD and got["speed"].unit == "rpm"


async def test_source_timestamp_is_the_servers(opcua_sim: OpcUaSimulator) -> None:
    driver = make(opcua_sim.endpoint, "poll")
    await driver.connect()
    try:
        opcua_sim.freeze(True)
        await asyncio.sleep(0.2)
        node = opcua_sim._nodes["Cnc.SpindleSpeed"]
        server_dv = await node.read_data_value()
        reading = next(r for r in await driver.read() if r.tag == "speed")
    finally:
        await driver.close()
    assert server_dv.SourceTimestamp is not None
    assert reading.source_ts.replace(tzinfo=None) == server_dv.SourceTimestamp.replace(tzinfo=None)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_removed_node_goes_bad_while_others_flow(opcua_sim: OpcUaSimulator,
                                                       mode: str) -> None:
    await opcua_sim.remove_node("Types.Int16")
    driver = make(opcua_sim.endpoint, mode)
    await driver.connect()
    try:
        got = await collect(driver, 0.5)
    finally:
        await driver.close()
    bad = [r for r in got if r.tag == "Types_Int16"]
    assert bad and all(r.error == "BadNodeIdUnknown" for r in bad)
    assert any(r.tag == "speed" and r.quality is Quality.GOOD for r in got)


async def test_server_down_at_start_is_unreachable_within_the_timeout() -> None:
    sim = OpcUaSimulator()
    driver = make(sim.endpoint, "poll")
    with pytest.raises(DeviceUnreachable):
        await asyncio.wait_for(driver.connect(), 5)


async def test_subscription_comes_back_after_a_server_restart(
        opcua_sim: OpcUaSimulator) -> None:
    driver = make(opcua_sim.endpoint, "subscribe")
    await driver.connect()
    try:
        await collect(driver, 0.3)
        await opcua_sim.restart()
        fresh: list[Reading] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline and not any(r.tag == "speed" for r in fresh):
            try:
                fresh = await driver.read()
            except DeviceUnreachable:  # what the runtime does: close, back off, connect
                await driver.close()
                await asyncio.sleep(0.2)
                try:
                    await driver.connect()
                except DeviceUnreachable:
                    continue
            await asyncio.sleep(0.1)
    finally:
        await driver.close()
    assert any(r.tag == "speed" and r.quality is Quality.GOOD for r in fresh)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_a_silent_link_is_noticed_and_recovered(opcua_sim: OpcUaSimulator,
                                                      mode: str) -> None:
    """A hung server or pulled cable sends no RST: the session watchdog must notice."""
    async with SilentableProxy(opcua_sim.port) as proxy:
        driver = make(f"opc.tcp://127.0.0.1:{proxy.port}/", mode)
        await driver.connect()
        try:
            assert any(r.tag == "speed" for r in await collect(driver, 0.5))
            proxy.silent = True
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(DeviceUnreachable):
                while loop.time() - started < 10:
                    await driver.read()
                    await asyncio.sleep(0.1)
            noticed = loop.time() - started
            await driver.close()
            proxy.silent = False
            proxy.drop_all()
            await driver.connect()
            assert any(r.tag == "speed" and r.quality is Quality.GOOD
                       for r in await collect(driver, 0.5))
        finally:
            await driver.close()
    assert noticed < 6


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_namespace_uri_node_ids_are_resolved_at_connect(opcua_sim: OpcUaSimulator,
                                                              mode: str) -> None:
    driver = make(opcua_sim.endpoint, mode, [
        {"name": "by_uri", "node": "nsu=urn:shopfloor:cnc;s=Cnc.SpindleSpeed"},
        {"name": "no_such_ns", "node": "nsu=urn:not:there;s=Cnc.SpindleSpeed"}])
    await driver.connect()
    try:
        got = await collect(driver, 0.5)
    finally:
        await driver.close()
    assert any(r.tag == "by_uri" and r.quality is Quality.GOOD and isinstance(r.value, float)
               for r in got)
    missing = [r for r in got if r.tag == "no_such_ns"]
    assert missing and all(r.quality is Quality.BAD for r in missing)
