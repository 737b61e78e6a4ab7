"""Twins built from configs: the gateway (in-process, real sockets, a real embedded broker)
reads every tag good, with exactly the value the twin holds."""

from __future__ import annotations

import asyncio
import base64
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.broker import EmbeddedBroker
from gateway.config import parse_config
from gateway.models import iso_z
from gateway.runtime import Gateway
from simulators.twin import Twins
from tests.procs import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
NUMBERS = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
OPCUA_TYPES = ["Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64",
               "UInt64", "Float", "Double", "String", "DateTime", "ByteString", "DoubleArray"]


def every_type_config() -> dict[str, Any]:
    """One Modbus device with every type in every byte/word order, bits of a status word (with
    no tag for the word itself), strings, coils, scaled and limited tags; and one OPC UA
    device (namespace by index) with a node of every variant type, another by URI."""
    tags: list[dict[str, Any]] = []
    address = 0
    for data_type in NUMBERS:
        for byte_order, word_order in ORDERS:
            tags.append({"name": f"{data_type}_{byte_order}_{word_order}", "table": "holding",
                         "address": address, "type": data_type, "byte_order": byte_order,
                         "word_order": word_order})
            address += 4
    tags += [
        {"name": "bit_0", "table": "holding", "address": 500, "type": "bool", "bit": 0},
        {"name": "bit_7", "table": "holding", "address": 500, "type": "bool", "bit": 7},
        {"name": "bit_15_swapped", "table": "holding", "address": 501, "type": "bool",
         "bit": 15, "byte_order": "little"},
        {"name": "recipe", "table": "holding", "address": 510, "type": "string", "length": 5},
        {"name": "recipe_swapped", "table": "input", "address": 600, "type": "string",
         "length": 3, "byte_order": "little"},
        {"name": "temperature", "table": "input", "address": 1000, "type": "int16",
         "scale": 0.1, "offset": -40, "min": -20, "max": 60},
        {"name": "setpoint", "table": "holding", "address": 40000, "type": "float32",
         "min": 100, "max": 200, "writable": True},
        {"name": "good_count", "table": "input", "address": 2000, "type": "uint32"},
        {"name": "motor_on", "table": "coil", "address": 3, "type": "bool", "writable": True},
        {"name": "guard", "table": "discrete", "address": 9000, "type": "bool"},
    ]
    nodes = [{"name": f"t_{v.lower()}", "node": f"ns=3;s=Types.{v}"} for v in OPCUA_TYPES]
    nodes += [{"name": "program", "node": "nsu=urn:acme:mill;s=Mill.Program"},
              {"name": "spindle", "node": "nsu=urn:acme:mill;i=1001"}]
    return {
        "gateway": {"id": "twins", "site": "plant"},
        "devices": [
            {"name": "everything", "driver": "modbus", "poll_interval": "200ms",
             "connection": {"host": "10.1.2.3", "port": 502, "unit_id": 7}, "tags": tags},
            {"name": "mill", "driver": "opcua", "poll_interval": "200ms",
             "connection": {"endpoint": "opc.tcp://10.1.2.4:4840/mill"}, "tags": nodes}],
        "sinks": {"mqtt": {"url": "mqtt://10.9.9.9:1883"}}}


async def read_through_gateway(raw: dict[str, Any], tmp_path: Path,
                               timeout: float = 60) -> tuple[dict[Any, Any], Twins]:
    """Start the twins, freeze them, run a gateway on the twin config until every tag has a
    good reading; the readings by (device, tag) and the twins (stopped)."""
    config = parse_config(yaml.safe_dump(raw), "<test>", {})
    async with EmbeddedBroker(port=0) as broker, Twins(config, raw) as twins:
        twins.freeze()
        pointed = dict(twins.config)
        pointed["gateway"] = {**pointed["gateway"], "buffer": {"path": str(tmp_path / "b.db")},
                              "http": {"listen": f"127.0.0.1:{free_port()}"}}
        pointed["sinks"] = {"mqtt": {"url": broker.url}}
        gateway_config = parse_config(yaml.safe_dump(pointed), "<twin>", {})
        expected = {(d.name, t.name) for d in gateway_config.devices for t in d.tags}
        gateway, stop = Gateway(gateway_config), asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))
        try:
            latest = gateway.state.tags.latest
            deadline = asyncio.get_running_loop().time() + timeout
            while not all(k in latest and latest[k].quality.value == "good" for k in expected):
                assert asyncio.get_running_loop().time() < deadline, {
                    k: latest.get(k) for k in expected
                    if k not in latest or latest[k].quality.value != "good"}
                assert not task.done(), task
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # one more poll: every value read after the freeze
            readings = {k: gateway.state.tags.latest[k] for k in expected}
            held = {k: twins.value_of(*k) for k in expected}
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    return {k: (r.value, held[k]) for k, r in readings.items()}, twins


def as_published(key: tuple[str, str], value: Any) -> Any:
    """The twin's native OPC UA value as the driver publishes it (drivers/opcua/values.py):
    ByteString in base64, DateTime in ISO 8601, a Float widened from float32."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return iso_z(value)  # the one text form of an instant (gateway.models.iso_z)
    if key[1] == "t_float":
        return struct.unpack("<f", struct.pack("<f", value))[0]
    return value


def assert_all_equal(pairs: dict[Any, Any]) -> None:
    wrong = {k: v for k, v in pairs.items() if v[0] != as_published(k, v[1])}
    assert not wrong, f"gateway value != twin value: {wrong}"


@pytest.mark.parametrize("name", ["modbus-demo.yaml", "opcua-demo.yaml"])
async def test_twin_of_a_shipped_config_reads_every_tag_good(name: str, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    pairs, twins = await read_through_gateway(raw, tmp_path)
    assert_all_equal(pairs)
    assert len(pairs) == sum(len(d["tags"]) for d in raw["devices"])
    if name.startswith("modbus"):
        assert len(twins.modbus) == 1, "three devices on one host:port share one server"
        assert sorted(next(iter(twins.modbus.values())).twins) == [1, 2, 3]


async def test_twin_of_every_type_and_order(tmp_path: Path) -> None:
    pairs, _ = await read_through_gateway(every_type_config(), tmp_path)
    assert_all_equal(pairs)
    values = {k[1]: v[0] for k, v in pairs.items()}
    assert values["recipe"] == "RECIPE"[:10] and values["recipe_swapped"] == "RECIPE"
    assert 100 <= values["setpoint"] <= 200 and -20 <= values["temperature"] <= 60
    assert len(values["t_doublearray"]) == 3 and values["t_string"] == "T-STRING"
    assert isinstance(values["t_boolean"], bool) and isinstance(values["t_uint64"], int)
