"""The Sparkplug B sink against a real mosquitto, checked by a host that decodes the raw
protobuf schema (tests/sparkplug_host.py): births, data by alias, seq and bdSeq, deaths,
Rebirth, primary host STATE and no loss across outages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import SinkError
from gateway.metrics import Counters
from gateway.models import Quality, Reading
from gateway.sinks import DeviceContext
from gateway.sinks.sparkplug.config import SparkplugSinkConfig
from gateway.sinks.sparkplug.sink import SparkplugSink
from tests.fixtures_mqtt import Mosquitto
from tests.procs import eventually
from tests.sparkplug_host import SparkplugHost
from tests.tcp_proxy import SilentableProxy

pytestmark = pytest.mark.integration
TS = datetime(2026, 11, 24, 1, 2, 3, 123000, tzinfo=UTC)
TS_MS = 1795482123123
GROUP, EDGE = "plant-1", "edge-01"


@dataclass(frozen=True)
class TypedContext(DeviceContext):
    """DeviceContext with the published value types (what the runtime will give)."""

    value_types: Mapping[str, str] = field(default_factory=dict)


PRESS_TYPES = {"oil_temperature": "float32", "strokes": "uint16", "offset": "int16",
               "door_open": "bool", "recipe": "string", "pressures": "array:int16",
               "force": "float64"}
CONTEXTS: dict[str, DeviceContext] = {
    "press-01": TypedContext("edge-01", "jeonju", "stamping", "line-1", "press-01",
                             PRESS_TYPES),
    "cnc-07": TypedContext("edge-01", "jeonju", "machining", "line-2", "cnc-07",
                           {"counter": "uint32"}),
}


def make_sink(url: str, state_dir: Path, counters: Counters | None = None,
              **settings: Any) -> SparkplugSink:
    config = SparkplugSinkConfig(url=url, group_id=GROUP, **settings)
    return SparkplugSink(config, EDGE, CONTEXTS, state_path=state_dir / "sparkplug.bdseq",
                         counters=counters or Counters())


async def live(sink: SparkplugSink, timeout: float = 60.0) -> SparkplugSink:
    deadline = time.monotonic() + timeout
    while not sink.connected:
        if time.monotonic() > deadline:
            raise AssertionError("the sink did not go live")
        await asyncio.sleep(0.02)
    return sink


@contextlib.asynccontextmanager
async def running(sink: SparkplugSink, wait_live: bool = True) -> AsyncIterator[SparkplugSink]:
    await sink.start()
    try:
        if wait_live:
            await live(sink)
        yield sink
    finally:
        await sink.close()


@pytest.fixture
def host_for(request: pytest.FixtureRequest) -> Iterator[Callable[[Mosquitto], SparkplugHost]]:
    hosts: list[SparkplugHost] = []

    def make(broker: Mosquitto) -> SparkplugHost:
        host = SparkplugHost(broker.host, broker.port, GROUP, EDGE)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


async def until(host: SparkplugHost, predicate: Callable[[SparkplugHost], bool],
                what: str, timeout: float = 60.0) -> None:
    await asyncio.to_thread(host.wait, predicate, timeout, what)


def press_cycle(ts: datetime, temperature: float = 21.5, strokes: int = 7) -> list[Reading]:
    return [
        Reading(device="press-01", tag="oil_temperature", value=temperature, source_ts=ts,
                unit="degC"),
        Reading(device="press-01", tag="strokes", value=strokes, source_ts=ts),
        Reading(device="press-01", tag="offset", value=-3, source_ts=ts),
        Reading(device="press-01", tag="door_open", value=True, source_ts=ts),
        Reading(device="press-01", tag="recipe", value="AB-12", source_ts=ts),
        Reading(device="press-01", tag="pressures", value=(1, -2, 300), source_ts=ts),
        Reading(device="press-01", tag="force", value=12.25, source_ts=ts),
    ]


def counter(value: int, ts: datetime | None = None) -> Reading:
    return Reading(device="cnc-07", tag="counter", value=value,
                   source_ts=ts or datetime.now(UTC))


def bdseq_of(payload: Any) -> int:
    return next(int(m.long_value) for m in payload.metrics if m.name == "bdSeq")


async def deliver(sink: SparkplugSink, batches: list[list[Reading]], stop: asyncio.Event
                  ) -> None:
    """The runtime's delivery contract in small: each batch until send() returns, retried
    after wait_ready on a SinkError (the buffer keeps it meanwhile)."""
    while batches and not stop.is_set():
        try:
            await sink.send(batches[0])
        except SinkError:
            await sink.wait_ready(0.2)
            continue
        batches.pop(0)


# -- births and data ---------------------------------------------------------------------------

async def test_births_carry_bdseq_datatypes_aliases_and_values(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        await until(host, lambda h: bool(h.of_kind("NBIRTH")), "NBIRTH")
        assert not host.of_kind("DBIRTH"), "a DBIRTH waits for the device's first readings"
        await sink.send(press_cycle(TS))
        await until(host, lambda h: bool(h.of_kind("DBIRTH", "press-01")), "DBIRTH")
    nbirth = host.of_kind("NBIRTH")[0].payload
    assert nbirth.seq == 0
    assert bdseq_of(nbirth) == 0 == sink.bdseq  # a fresh state file starts at 0
    metrics = {m.name: m for m in nbirth.metrics}
    assert metrics["bdSeq"].datatype == 8  # UInt64
    assert metrics["Node Control/Rebirth"].datatype == 11
    assert metrics["Node Control/Rebirth"].boolean_value is False
    dbirth = host.of_kind("DBIRTH", "press-01")[0].payload
    assert dbirth.seq == 1
    born = {m.name: m for m in dbirth.metrics}
    assert {name: m.datatype for name, m in born.items()} == {
        "oil_temperature": 9, "strokes": 6, "offset": 2, "door_open": 11, "recipe": 12,
        "pressures": 23, "force": 10}
    assert len({m.alias for m in dbirth.metrics}) == 7
    assert all(m.timestamp == TS_MS for m in dbirth.metrics)
    values = {p.name: p.value for p in host.points if p.kind == "DBIRTH"}
    assert values == {"oil_temperature": 21.5, "strokes": 7, "offset": -3, "door_open": True,
                      "recipe": "AB-12", "pressures": (1, -2, 300), "force": 12.25}
    assert host.violations == []


async def test_data_goes_by_alias_with_source_timestamps_and_quality(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        now = datetime.now(UTC)  # after the session started: live, not historical
        later = now + timedelta(seconds=1)
        await sink.send(press_cycle(now))
        await sink.send([
            Reading(device="press-01", tag="oil_temperature", value=22.0, source_ts=later),
            Reading(device="press-01", tag="strokes", value=None, quality=Quality.BAD,
                    source_ts=later, error="modbus exception 2"),
            Reading(device="press-01", tag="force", value=12.5, quality=Quality.UNCERTAIN,
                    source_ts=later),
        ])
        await until(host, lambda h: len(h.data_points("press-01")) >= 3, "DDATA")
        sock = sink._client.socket()
        assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), \
            "each packet sent at once, not held behind the last one's delayed ACK"
    ddata = host.of_kind("DDATA", "press-01")[0].payload
    assert all(not m.name and m.alias for m in ddata.metrics), "DDATA goes by alias only"
    points = {p.name: p for p in host.data_points("press-01")}
    assert points["oil_temperature"].value == 22.0
    assert points["oil_temperature"].quality == 192
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert points["oil_temperature"].timestamp == (later - epoch) // timedelta(milliseconds=1)
    assert points["strokes"].value is None and points["strokes"].quality == 0
    assert points["force"].value == 12.5 and points["force"].quality == 64
    assert not any(p.historical for p in points.values())
    assert host.violations == []


async def test_seq_wraps_past_255_without_a_gap(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        # One cycle per message: the same tag again starts the next DDATA.
        for start in range(0, 300, 100):
            await sink.send([counter(i) for i in range(start, start + 100)])
        await until(host, lambda h: len(h.data_points("cnc-07")) >= 299, "300 messages")
    seqs = [m.payload.seq for m in host.received if m.kind != "NDEATH"]
    assert seqs[:3] == [0, 1, 2]
    assert 255 in seqs and seqs[seqs.index(255) + 1] == 0
    assert max(seqs) == 255
    assert host.violations == []  # every seq is the previous + 1 (mod 256)


async def test_a_thousand_tags_in_one_dbirth(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    readings = [Reading(device="line-9", tag=f"t{i:04d}", value=float(i), source_ts=TS)
                for i in range(1000)]
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        await sink.send(readings)
        await until(host, lambda h: bool(h.of_kind("DBIRTH", "line-9")), "DBIRTH")
    dbirth = host.of_kind("DBIRTH", "line-9")[0].payload
    assert len(dbirth.metrics) == 1000
    assert len({m.alias for m in dbirth.metrics}) == 1000
    assert {m.datatype for m in dbirth.metrics} == {10}  # no value_types: a float is a Double


# -- sessions ----------------------------------------------------------------------------------

async def test_bdseq_grows_per_connection_and_the_will_carries_it(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    async with SilentableProxy(mosquitto.port) as proxy:
        url = f"mqtt://127.0.0.1:{proxy.port}"
        async with running(make_sink(url, tmp_path)) as sink:
            await sink.send([counter(1)])
            await until(host, lambda h: bool(h.of_kind("DBIRTH", "cnc-07")), "DBIRTH")
            proxy.drop_all()  # the connection breaks without a DISCONNECT: the broker sends
            await until(host, lambda h: bool(h.of_kind("NDEATH")), "NDEATH (the will)")
            await until(host, lambda h: len(h.of_kind("NBIRTH")) == 2, "a second NBIRTH")
            await live(sink)
            await sink.send([counter(2)])
            await until(host, lambda h: len(h.of_kind("DBIRTH", "cnc-07")) == 2,
                        "the device born again in the new session")
        # A restart of the sink: the state file carries bdSeq on.
        async with running(make_sink(url, tmp_path)):
            await until(host, lambda h: len(h.of_kind("NBIRTH")) == 3, "NBIRTH after restart")
    births = [bdseq_of(m.payload) for m in host.of_kind("NBIRTH")]
    deaths = [bdseq_of(m.payload) for m in host.of_kind("NDEATH")]
    assert births == [0, 1, 2]
    assert deaths[:2] == [0, 1]  # the will of session 0, then the clean close of session 1
    assert host.violations == []


async def test_the_first_batch_waits_for_the_first_session_and_not_longer_than_a_refusal(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    """A batch polled while the CONNACK is on its way waits for the session (births sent)
    rather than failing; a refused broker ends that wait at once."""
    host = host_for(mosquitto)
    async with SilentableProxy(mosquitto.port) as proxy:
        proxy.hold_replies()
        async with running(make_sink(f"mqtt://127.0.0.1:{proxy.port}", tmp_path),
                           wait_live=False) as sink:
            waiting = asyncio.create_task(sink.wait_first_connection(600))
            await eventually(lambda: proxy.forwarded_to_server > 0, 15, "the CONNECT")
            assert not waiting.done()
            proxy.release_replies()
            await asyncio.wait_for(waiting, 30)
            assert sink.connected
            await sink.send([counter(1)])
            await until(host, lambda h: bool(h.of_kind("DBIRTH", "cnc-07")), "DBIRTH")
    refused = make_sink(Mosquitto(tmp_path / "never-started").url, tmp_path)
    async with running(refused, wait_live=False):
        await asyncio.wait_for(refused.wait_first_connection(600), 20)
        assert not refused.connected


async def test_device_down_gets_ddeath_and_dbirth_when_back(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    down = TS + timedelta(seconds=1)
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        await sink.send(press_cycle(TS))
        # How the runtime reports an unreachable device: every tag bad, one reason.
        await sink.send([Reading(device="press-01", tag=tag, value=None, quality=Quality.BAD,
                                 source_ts=down, error="connection refused")
                         for tag in PRESS_TYPES])
        await sink.send([Reading(device="press-01", tag=tag, value=None, quality=Quality.BAD,
                                 source_ts=down, error="connection refused")
                         for tag in PRESS_TYPES])  # still down: no second DDEATH
        await sink.send(press_cycle(TS + timedelta(seconds=5), temperature=30.0))
        await until(host, lambda h: len(h.of_kind("DBIRTH", "press-01")) == 2, "DBIRTH again")
    # the sink's NDEATH reaches the host on its own thread, after the close returns
    await until(host, lambda h: bool(h.of_kind("NDEATH")), "NDEATH at the close")
    assert host.kinds() == ["NBIRTH", "DBIRTH:press-01", "DDEATH:press-01", "DBIRTH:press-01",
                            "NDEATH"]
    reborn = [p for p in host.points if p.kind == "DBIRTH"][-7:]
    assert {p.name: p.value for p in reborn}["oil_temperature"] == 30.0
    assert host.violations == []


async def test_rebirth_on_ncmd_sends_nbirth_and_every_dbirth(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    async with running(make_sink(mosquitto.url, tmp_path)) as sink:
        await sink.send([*press_cycle(TS), counter(5, TS)])
        await until(host, lambda h: len(h.of_kind("DBIRTH")) == 2, "two DBIRTHs")
        host.request_rebirth()
        await until(host, lambda h: len(h.of_kind("DBIRTH")) == 4, "the rebirth")
        await sink.send([counter(6)])
        await until(host, lambda h: bool(h.data_points("cnc-07")), "data after the rebirth")
    nbirths = host.of_kind("NBIRTH")
    assert len(nbirths) == 2
    assert bdseq_of(nbirths[0].payload) == bdseq_of(nbirths[1].payload)  # a rebirth keeps it
    assert host.data_points("cnc-07")[0].value == 6
    assert host.violations == []  # seq restarted at 0 with the second NBIRTH


async def test_dcmd_is_refused_while_commands_are_not_wired(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    counters = Counters()
    async with running(make_sink(mosquitto.url, tmp_path, counters)):
        host._client.publish(f"spBv1.0/{GROUP}/DCMD/{EDGE}/press-01", b"\x00", qos=1)
        deadline = time.monotonic() + 10
        while not counters.get("gateway_sink_commands_refused_total", sink="sparkplug"):
            assert time.monotonic() < deadline, "the DCMD was not seen"
            await asyncio.sleep(0.05)


# -- primary host ------------------------------------------------------------------------------

async def test_primary_host_offline_buffers_then_births_backlog_then_live(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    host_id = f"scada-{os.getpid()}-{time.monotonic_ns()}"
    host.publish_state(host_id, online=False)
    sink = make_sink(mosquitto.url, tmp_path, primary_host_id=host_id)
    stop = asyncio.Event()
    past = datetime.now(UTC) - timedelta(minutes=5)
    backlog = [[counter(i, past + timedelta(seconds=i))] for i in range(20)]
    async with running(sink, wait_live=False):
        delivery = asyncio.create_task(deliver(sink, backlog, stop))
        await asyncio.sleep(1.5)  # the sink is connected and retrying meanwhile
        assert host.received == [], "nothing is published while the host is offline"
        assert len(backlog) == 20 and not sink.connected
        with pytest.raises(SinkError, match="offline"):
            await sink.send([counter(99)])
        host.publish_state(host_id, online=True)
        await asyncio.wait_for(delivery, 20)
        live_batches = [[counter(100 + i)] for i in range(3)]
        await deliver(sink, live_batches, stop)
        await until(host, lambda h: len(h.data_points("cnc-07")) == 22, "backlog and live")
        host.publish_state(host_id, online=False)
        await until(host, lambda h: bool(h.of_kind("NDEATH")), "NDEATH when the host is gone")
        with pytest.raises(SinkError):
            await sink.send([counter(200)])
        # It connected anew (a new bdSeq) and waits for the host: back online, births again.
        await until(host, lambda h: sink.bdseq == 1, "a new connection")
        host.publish_state(host_id, online=True)
        await until(host, lambda h: len(h.of_kind("NBIRTH")) == 2, "births for the host")
        assert bdseq_of(host.of_kind("NBIRTH")[1].payload) == 1
    kinds = host.kinds()
    assert kinds[:2] == ["NBIRTH", "DBIRTH:cnc-07"]  # births first
    points = host.data_points("cnc-07")
    assert [p.value for p in points] == [*range(1, 20), 100, 101, 102]
    assert all(p.historical for p in points[:19]), "the backlog is historical"
    assert not any(p.historical for p in points[19:]), "live data is not"
    assert host.violations == []


# -- no loss -----------------------------------------------------------------------------------

async def test_nothing_is_lost_across_a_broker_kill(
        tmp_path: Path, host_for: Callable[[Mosquitto], SparkplugHost]) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        await _count_through_a_broker_kill(broker, host_for, tmp_path)
    finally:
        broker.stop()


async def _count_through_a_broker_kill(broker: Mosquitto,
                                       host_for: Callable[[Mosquitto], SparkplugHost],
                                       tmp_path: Path) -> None:
    host = host_for(broker)
    stop = asyncio.Event()
    total = 400
    batches = [[counter(i) for i in range(start, start + 10)] for start in range(0, total, 10)]
    async with running(make_sink(broker.url, tmp_path)) as sink:
        delivery = asyncio.create_task(_paced(sink, batches, stop))
        await until(host, lambda h: len(h.data_points("cnc-07")) >= 50, "data before the kill")
        broker.kill()
        await asyncio.sleep(2)  # the outage
        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(host.wait_subscribed)
        await asyncio.wait_for(delivery, 60)
        await until(host, lambda h: {p.value for p in h.data_points("cnc-07")}
                    >= set(range(1, total)), "every counter value", timeout=30)
    assert host.violations == []


async def _paced(sink: SparkplugSink, batches: list[list[Reading]], stop: asyncio.Event
                 ) -> None:
    while batches:
        await deliver(sink, batches[:1], stop)
        batches.pop(0)
        await asyncio.sleep(0.02)


# -- a real crash ------------------------------------------------------------------------------

_GATEWAY = textwrap.dedent("""
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from gateway.models import Reading
    from gateway.sinks import DeviceContext
    from gateway.sinks.sparkplug.config import SparkplugSinkConfig
    from gateway.sinks.sparkplug.sink import SparkplugSink

    async def main():
        config = SparkplugSinkConfig(url=sys.argv[1], group_id="plant-1", keepalive="60s")
        ctx = {"cnc-07": DeviceContext("edge-01", "", "", "", "cnc-07")}
        sink = SparkplugSink(config, "edge-01", ctx, state_path=Path(sys.argv[2]))
        await sink.start()
        n = 0
        while True:
            if sink.connected:
                await sink.send([Reading(device="cnc-07", tag="counter", value=n,
                                         source_ts=datetime.now(UTC))])
                n += 1
            await asyncio.sleep(0.05)

    asyncio.run(main())
""")


def _start_gateway(url: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _GATEWAY, url, str(state)],
                            cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_sigkilled_gateway_gets_its_ndeath_and_a_higher_bdseq_after_restart(
        mosquitto: Mosquitto, host_for: Callable[[Mosquitto], SparkplugHost],
        tmp_path: Path) -> None:
    host = host_for(mosquitto)
    state = tmp_path / "buffer.sparkplug.bdseq"
    state.write_text("41\n")  # a gateway that has connected before
    proc = _start_gateway(mosquitto.url, state)
    try:
        await until(host, lambda h: len(h.data_points("cnc-07")) >= 3, "the gateway's data")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        await until(host, lambda h: bool(h.of_kind("NDEATH")), "NDEATH from the broker")
        proc = _start_gateway(mosquitto.url, state)
        await until(host, lambda h: len(h.of_kind("NBIRTH")) == 2, "NBIRTH after the restart")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    births = [bdseq_of(m.payload) for m in host.of_kind("NBIRTH")]
    assert births == [42, 43]
    assert bdseq_of(host.of_kind("NDEATH")[0].payload) == 42  # the will matches its NBIRTH
    assert host.violations == []
