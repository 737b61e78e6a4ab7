"""`gateway discover` against the simulator: its output, pasted under `devices:`, passes
`gateway check` and `gateway run` publishes every discovered tag; refusals exit 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.sinks.mqtt_wire import level
from simulators.opcua import OpcUaSimulator
from simulators.opcua.security import SimulatorSecurity
from tests.fixtures_mqtt import Message, Mosquitto
from tests.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def gateway(*args: str, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread, so the simulator in this event loop keeps answering."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", *args], capture_output=True,
        text=True, timeout=30, env={**os.environ, **(env or {})}, cwd=cwd)


def gateway_config(tmp_path: Path, device: str, mqtt_url: str) -> Path:
    path = tmp_path / "discovered.yaml"
    path.write_text(f"""gateway:
  id: edge-test
  site: plant
  buffer: {{path: {tmp_path / 'buffer.db'}}}
  shutdown_timeout: 3s
  http: {{enabled: false}}
devices:
{device}sinks:
  mqtt:
    url: {mqtt_url}
    topic: "{{site}}/{{device}}/{{tag}}"
""")
    return path


async def test_discovered_tags_pass_check_and_are_all_published(
        tmp_path: Path, opcua_sim: OpcUaSimulator, mosquitto: Mosquitto,
        mqtt_collector: Callable[..., Any]) -> None:
    found = await gateway("discover", opcua_sim.endpoint, "--device", "cnc-01")
    assert found.returncode == 0, found.stderr
    tags = [t["name"] for t in yaml.safe_load(found.stdout)[0]["tags"]]
    assert {"Cnc.State", "Cnc.SpindleSpeed", "Cnc.Position.X", "Types.DoubleArray"} <= set(tags)
    config = gateway_config(tmp_path, found.stdout, mosquitto.url)

    checked = await gateway("check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"{len(tags)} tag(s)" in checked.stdout

    topics = {f"plant/cnc-01/{level(tag)}" for tag in tags}
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "plant/cnc-01/#")
    run = start_gateway(config, tmp_path / "run.log")
    try:
        await asyncio.to_thread(collector.wait_for, lambda m: topics <= good_topics(m), 20,
                                "a good reading of every discovered tag")
    finally:
        run.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(run.wait, 20)
    assert returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    speeds = [m.payload for m in collector.snapshot() if m.topic.endswith("/Cnc.SpindleSpeed")]
    assert speeds[-1]["unit"] == "r/min"


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT)


def good_topics(messages: list[Message]) -> set[str]:
    return {m.topic for m in messages if m.payload.get("quality") == "good"}


async def test_unreachable_server_exits_2_with_one_line() -> None:
    result = await gateway("discover", f"opc.tcp://127.0.0.1:{free_port()}/", "--timeout", "2s")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("discover: opc.tcp://127.0.0.1:")
    assert "connect call failed" in line.lower()


async def test_secured_server_is_discovered_with_the_connection_options(tmp_path: Path) -> None:
    security = SimulatorSecurity(pki=tmp_path / "server-pki", users={"operator": "s3cret"})
    async with OpcUaSimulator(seed=2, security=security) as sim:
        args = ["discover", sim.endpoint, "--security", "Basic256Sha256", "--mode", "Sign",
                "--server-certificate", str(security.certificate_path), "--pki",
                str(tmp_path / "pki"), "--username", "operator", "--password-env", "PW",
                "--filter", "Cnc.Spindle*"]
        found = await gateway(*args, env={"PW": "s3cret"})
        refused = await gateway(*args, env={"PW": "wrong"})
    assert found.returncode == 0, found.stderr
    [device] = yaml.safe_load(found.stdout)
    assert device["connection"] == {
        "endpoint": sim.endpoint, "security": "Basic256Sha256", "mode": "Sign",
        "server_certificate": str(security.certificate_path), "pki": str(tmp_path / "pki"),
        "username": "operator", "password": "${PW}", "timeout": "4s"}
    assert [t["name"] for t in device["tags"]] == ["Cnc.SpindleSpeed", "Cnc.SpindleLoad"]
    assert refused.returncode == 2 and refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert "rejected the login of user 'operator'" in line


async def test_root_depth_namespace_and_filter_narrow_the_browse(
        opcua_sim: OpcUaSimulator) -> None:
    async def tags(*args: str) -> list[str]:
        found = await gateway("discover", opcua_sim.endpoint, *args)
        assert found.returncode == 0, found.stderr
        return [t["name"] for t in yaml.safe_load(found.stdout)[0]["tags"]]

    assert await tags("--root", "nsu=urn:shopfloor:cnc;s=Cnc.Position") == ["X", "Y", "Z"]
    assert "Cnc.Position.X" not in await tags("--depth", "2", "--filter", "Cnc.*")
    assert await tags("--namespace", "0", "--filter", "Server.ServerStatus.State") == [
        "Server.ServerStatus.State"]
    assert await tags("--namespace", "urn:shopfloor:cnc", "--filter", "*Feed*") == [
        "Cnc.FeedRate"]


@pytest.mark.parametrize("args", [["--namespace", "urn:not:there"],
                                  ["--root", "nsu=urn:not:there;s=Cnc"],
                                  ["--filter", "NoSuchTag*"]])
async def test_a_browse_that_finds_nothing_exits_2_and_says_why(
        opcua_sim: OpcUaSimulator, args: list[str]) -> None:
    result = await gateway("discover", opcua_sim.endpoint, *args)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "urn:not:there" in line or "no variables" in line


@pytest.mark.parametrize("root", ["nsu=urn:shopfloor:cnc;s=Cnc.NoSuchObject", "ns=2;i=999999"])
async def test_a_root_the_server_does_not_have_is_not_found(
        opcua_sim: OpcUaSimulator, root: str) -> None:
    result = await gateway("discover", opcua_sim.endpoint, "--root", root)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line == f"discover: --root {root}: not found on the server (BadNodeIdUnknown)"
