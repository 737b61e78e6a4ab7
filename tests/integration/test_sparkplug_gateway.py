"""The Sparkplug sink inside a real `gateway run` subprocess, polling the Modbus simulator, seen
by the decoding test host (tests/sparkplug_host.py): NDEATH from the broker on a SIGKILL, DDEATH
and DBIRTH as the PLC goes and comes back, a broker outage that loses nothing, and a 1,000-tag
DBIRTH."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.modbus import ModbusSimulator, register_map
from tests.fixtures_mqtt import Mosquitto
from tests.procs import free_port
from tests.sparkplug_host import SparkplugHost

pytestmark = pytest.mark.integration
GROUP, EDGE = "plant-1", "sf-spb"
PRESS = next(m for m in register_map() if m["name"] == "press-01")


def bdseq_of(payload: Any) -> int:
    return next(int(m.long_value) for m in payload.metrics if m.name == "bdSeq")


def thousand_tags() -> list[dict[str, Any]]:
    """1,000 tags on one device: the simulator serves 256 addresses in each of its 4 tables."""
    tables = {"holding": "uint16", "input": "uint16", "coil": "bool", "discrete": "bool"}
    return [{"name": f"{table}_{address:03d}", "table": table, "address": address,
             "type": data_type}
            for table, data_type in tables.items() for address in range(250)]


class SparkplugRig:
    """A `gateway run` subprocess with one named Sparkplug sink (`scada`) and one device."""

    def __init__(self, tmp_path: Path, simulator: ModbusSimulator, broker: Mosquitto,
                 tags: list[dict[str, Any]] | None = None, poll: str = "100ms") -> None:
        self.tmp_path = tmp_path
        self.config_path = tmp_path / "gateway.yaml"
        config = {
            "gateway": {"id": EDGE, "site": "plant", "shutdown_timeout": "5s",
                        "buffer": {"path": str(tmp_path / "buffer.db")},
                        "http": {"listen": f"127.0.0.1:{free_port()}"}},
            "devices": [{"name": "press-01", "driver": "modbus", "area": "stamping",
                         "line": "line-1", "poll_interval": poll,
                         "connection": {"host": "127.0.0.1", "port": simulator.port,
                                        "unit_id": PRESS["unit_id"], "timeout": "500ms"},
                         "reconnect_max_backoff": "1s", "tags": tags or PRESS["tags"]}],
            "sinks": {"scada": {"type": "sparkplug", "url": broker.url, "group_id": GROUP,
                                "keepalive": "5s"}},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.tmp_path / f"gateway-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the gateway ignored SIGTERM:\n{self.logs()}") from None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.tmp_path.glob("gateway-*.log")))


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    async with ModbusSimulator(port=0, seed=11) as sim:
        yield sim


@pytest.fixture
def rigs() -> Iterator[list[SparkplugRig]]:
    started: list[SparkplugRig] = []
    yield started
    for rig in started:
        rig.kill()


@pytest.fixture
def hosts() -> Iterator[list[SparkplugHost]]:
    made: list[SparkplugHost] = []
    yield made
    for host in made:
        host.close()


def host_on(broker: Mosquitto, hosts: list[SparkplugHost], persistent: bool = False
            ) -> SparkplugHost:
    host = SparkplugHost(broker.host, broker.port, GROUP, EDGE, persistent=persistent)
    hosts.append(host)
    return host


async def until(host: SparkplugHost, predicate: Callable[[SparkplugHost], bool], what: str,
                rig: SparkplugRig, timeout: float = 90.0) -> None:
    try:
        await asyncio.to_thread(host.wait, predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rig.logs()}") from None


def sequence_values(host: SparkplugHost) -> set[int]:
    """poll_sequence as the host decoded it: born with a DBIRTH, then carried by DDATA."""
    with host._lock:
        return {p.value for p in host.points
                if p.name == "poll_sequence" and p.quality == 192 and p.value is not None}


def born_in_the_last_session(host: SparkplugHost) -> bool:
    """press-01 has a DBIRTH after the newest NBIRTH. Not a count of DBIRTHs: a restarted
    gateway resends the readings in flight at the kill first, and a partial cycle born before
    the full one is two DBIRTHs within one poll of the host."""
    kinds = host.kinds()
    last_nbirth = max((i for i, k in enumerate(kinds) if k == "NBIRTH"), default=None)
    return last_nbirth is not None and "DBIRTH:press-01" in kinds[last_nbirth:]


def gaps(values: set[int]) -> list[int]:
    return [n for n in range(min(values, default=1), max(values, default=0) + 1)
            if n not in values]


async def test_sigkilled_gateway_gets_its_ndeath_and_a_higher_bdseq_after_restart(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        rigs: list[SparkplugRig], hosts: list[SparkplugHost]) -> None:
    host = host_on(fresh_mosquitto, hosts)
    rig = SparkplugRig(tmp_path, simulator, fresh_mosquitto)
    rigs.append(rig)
    rig.start()
    await until(host, lambda h: len(h.data_points("press-01")) >= 10, "DDATA", rig)
    rig.kill()  # no DISCONNECT: the broker publishes the will when the socket closes
    await until(host, lambda h: bool(h.of_kind("NDEATH")), "NDEATH from the broker", rig)
    rig.start()
    await until(host, lambda h: len(h.of_kind("NBIRTH")) == 2, "NBIRTH after restart", rig)
    await until(host, born_in_the_last_session, "DBIRTH after the second NBIRTH", rig)
    assert rig.stop() == 0, rig.logs()
    births = [bdseq_of(m.payload) for m in host.of_kind("NBIRTH")]
    deaths = [bdseq_of(m.payload) for m in host.of_kind("NDEATH")]
    assert deaths[0] == births[0], "the will carries the bdSeq of its NBIRTH"
    assert births[1] > births[0], "bdSeq increases across the restart"
    assert host.violations == []


async def test_plc_stopped_gets_ddeath_and_dbirth_when_back(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        rigs: list[SparkplugRig], hosts: list[SparkplugHost]) -> None:
    host = host_on(fresh_mosquitto, hosts)
    rig = SparkplugRig(tmp_path, simulator, fresh_mosquitto)
    rigs.append(rig)
    rig.start()
    await until(host, lambda h: len(h.data_points("press-01")) >= 10, "DDATA", rig)
    await simulator.stop()
    await until(host, lambda h: bool(h.of_kind("DDEATH", "press-01")), "DDEATH", rig)
    await simulator.start()  # the same port: the PLC rebooted
    await until(host, lambda h: len(h.of_kind("DBIRTH", "press-01")) == 2, "DBIRTH", rig)
    seen = len(host.data_points("press-01"))
    await until(host, lambda h: len(h.data_points("press-01")) > seen, "DDATA again", rig)
    assert rig.stop() == 0, rig.logs()
    kinds = [k for k in host.kinds() if k != "DDATA:press-01"]
    assert kinds == ["NBIRTH", "DBIRTH:press-01", "DDEATH:press-01", "DBIRTH:press-01",
                     "NDEATH"]
    assert host.violations == []


async def test_broker_killed_for_10s_loses_nothing(
        tmp_path: Path, simulator: ModbusSimulator, rigs: list[SparkplugRig],
        hosts: list[SparkplugHost]) -> None:
    # The host keeps a persistent session and the broker queues its QoS 0 DDATA meanwhile, so
    # what the gateway replays before the host is back still reaches it.
    broker = Mosquitto(tmp_path / "mosquitto", "queue_qos0_messages true\n")
    broker.start()
    try:
        host = host_on(broker, hosts, persistent=True)
        rig = SparkplugRig(tmp_path, simulator, broker, poll="50ms")
        rigs.append(rig)
        rig.start()
        await until(host, lambda h: len(sequence_values(h)) >= 20, "readings before", rig)
        await asyncio.sleep(1.5)  # mosquitto saves the host's session every second
        broker.kill()
        await asyncio.sleep(10)  # the outage
        during = simulator.value_of(PRESS["unit_id"], "poll_sequence")
        await asyncio.to_thread(broker.start)
        await until(host, lambda h: max(sequence_values(h), default=0) >= during + 20,
                    "the backlog and live data", rig, timeout=90)
        assert rig.stop() == 0, rig.logs()
    finally:
        broker.stop()
    values = sequence_values(host)
    assert gaps(values) == [], rig.logs()
    assert during - min(values) > 100, "the gateway kept polling while the broker was down"
    assert len(host.of_kind("NBIRTH")) == 2
    assert any(p.historical for p in host.data_points("press-01")), "the backlog is historical"
    assert host.violations == []


async def test_a_thousand_tags_in_one_dbirth(
        tmp_path: Path, simulator: ModbusSimulator, fresh_mosquitto: Mosquitto,
        rigs: list[SparkplugRig], hosts: list[SparkplugHost]) -> None:
    host = host_on(fresh_mosquitto, hosts)
    rig = SparkplugRig(tmp_path, simulator, fresh_mosquitto, tags=thousand_tags(), poll="1s")
    rigs.append(rig)
    rig.start()
    await until(host, lambda h: bool(h.of_kind("DBIRTH", "press-01")), "DBIRTH", rig)
    await until(host, lambda h: bool(h.data_points("press-01")), "DDATA", rig)
    assert rig.stop() == 0, rig.logs()
    dbirth = host.of_kind("DBIRTH", "press-01")[0].payload
    assert len(dbirth.metrics) == 1000
    assert len({m.alias for m in dbirth.metrics}) == 1000
    assert {m.datatype for m in dbirth.metrics} == {6, 11}  # UInt16 registers, Boolean bits
    assert host.violations == []
