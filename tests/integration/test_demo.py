"""`gateway demo` runs simulators, an embedded broker and the gateway with no outside service."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.opcua.address_space import gateway_tags
from tests.fixtures_influx import InfluxV1Server
from tests.procs import free_port
from tests.sparkplug_host import SparkplugHost

pytestmark = pytest.mark.integration


def run_demo(*extra: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "4", "--mqtt-port", "0",
         "--http-port", "0", "--no-live", *extra],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_demo_publishes_every_simulated_tag_to_its_embedded_broker() -> None:
    output = run_demo()
    received = int(re.search(r"the broker received (\d+) messages", output)[1])  # type: ignore[index]
    assert received >= 3 * 32, output[-2000:]  # 32 Modbus tags, polled every second for 4 s
    assert re.search(r"\((4[3-9]|[5-9]\d) topics\)", output), "every tag has its topic"
    # Without the live view (piped, --no-live) the top lines still say where to look next.
    hint = re.search(r"demo: watch what the broker receives: (mosquitto_sub -h 127\.0\.0\.1 "
                     r"-p (\d+) -t '[^']+/#' -v)", output)
    assert hint, output[:2000]
    assert f"embedded broker at mqtt://127.0.0.1:{hint[2]})" in output


@pytest.mark.parametrize("installed", [False, True])
def test_the_demo_says_what_to_install_for_mosquitto_sub_only_when_missing(
        tmp_path: Path, installed: bool) -> None:
    """A fresh Debian or Ubuntu has no mosquitto_sub: the hint's command must not dead-end."""
    if installed:
        fake = tmp_path / "mosquitto_sub"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "1", "--mqtt-port", "0",
         "--http-port", "0", "--no-live"], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    said = "demo: no mosquitto_sub here: sudo apt install mosquitto-clients" in result.stdout
    assert said is not installed, result.stdout[:2000]
    assert "demo: watch what the broker receives: mosquitto_sub -h 127.0.0.1" in result.stdout


def test_demo_includes_the_opcua_cnc() -> None:
    output = run_demo("--opcua-port", str(free_port()))
    cnc_tags = len(gateway_tags())
    assert f"cnc-01: {cnc_tags}," in output, output[-2000:]  # every CNC variable at the broker
    assert "OPC UA CNC on opc.tcp://127.0.0.1:" in output


def test_demo_also_writes_to_influxdb_when_asked(influxdb_v1: InfluxV1Server) -> None:
    run_demo("--influx-url", influxdb_v1.url, "--influx-api", "v1")
    rows = influxdb_v1.query('SELECT count("cycle_counter") FROM "press-01"')
    assert rows and rows[0]["count"] >= 3


def test_demo_also_publishes_sparkplug_when_asked() -> None:
    """A Sparkplug host on the demo's embedded broker sees the edge node's births and data."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--duration", "60", "--mqtt-port", str(port),
         "--http-port", "0", "--no-live", "--sparkplug"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    host: SparkplugHost | None = None
    try:
        host = _host_when_up(port, proc)
        _births_seen(host)
        host.wait(lambda h: bool(h.data_points("press-01")), 30, "DDATA from the demo")
        births = host.of_kind("DBIRTH", "press-01")
        assert births and any(m.name == "poll_sequence" for m in births[0].payload.metrics)
        # A host that subscribed after the births cannot check what came before them.
        assert all("outside a session" in v for v in host.violations), host.violations
    finally:
        if host is not None:
            host.close()
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=30)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0].decode(errors="replace")
    assert "sparkplug (embedded broker at" in output, output[-2000:]


def _births_seen(host: SparkplugHost) -> None:
    """The NBIRTH, asking for a Rebirth (NCMD) every 2 s if the host came after it."""
    deadline = time.monotonic() + 30
    while not host.of_kind("NBIRTH"):
        assert time.monotonic() < deadline, f"no NBIRTH from the demo: {host.kinds()[-10:]}"
        with contextlib.suppress(AssertionError):
            host.wait(lambda h: bool(h.of_kind("NBIRTH")), 2, "NBIRTH")
            return
        host.request_rebirth()


def _host_when_up(port: int, proc: subprocess.Popen[bytes]) -> SparkplugHost:
    """The host connects as soon as the demo's broker listens (bounded by a deadline)."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the demo ended early"
        try:
            return SparkplugHost("127.0.0.1", port, "demo", "demo-gw")
        except (ConnectionRefusedError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_demo_oee_of_press_and_packer_moves_within_a_minute() -> None:
    """The demo's machines run on their seeded schedules and publish OEE every 5 s."""
    from tests.fixtures_mqtt import MqttCollector

    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--duration", "40", "--mqtt-port", str(port),
         "--http-port", "0", "--no-live"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL)
    collector = None
    try:
        deadline = time.monotonic() + 30
        while collector is None:
            try:
                collector = MqttCollector("127.0.0.1", port, "demo/+/+/+/oee")
            except (OSError, TimeoutError):
                assert time.monotonic() < deadline and demo.poll() is None, "no demo broker"
                time.sleep(0.5)

        def moving(messages: list[Any]) -> bool:
            values: dict[str, set[float]] = {"press-01": set(), "packer-03": set()}
            for m in messages:
                device = m.topic.split("/")[3]
                if device in values and m.payload.get("value") is not None:
                    values[device].add(m.payload["value"])
            return all(len(v) >= 2 for v in values.values())

        collector.wait_for(moving, timeout=45, what="two different OEE values per machine")
    finally:
        if collector is not None:
            collector.close()
        demo.terminate()
        demo.wait(20)


def test_demo_accepts_a_stroke_setpoint_command_and_the_press_follows_it() -> None:
    """The README's mosquitto_pub, done with paho: a result comes back and the press's
    strokes_per_minute follows the new setpoint."""
    import json

    import paho.mqtt.client as mqtt

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--duration", "90", "--mqtt-port", str(port),
         "--http-port", "0", "--no-live"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seen: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-command-test")
    client.on_message = lambda c, u, m: seen.__setitem__(m.topic, m.payload)
    try:
        _connect_when_up(client, port, proc)
        client.subscribe("#", qos=1)
        client.loop_start()
        data = _wait_for(seen, "/press-01/stroke_setpoint", proc)
        client.publish(data + "/set", json.dumps({"value": 35, "id": "t-1"}), qos=1)
        result = json.loads(seen[_wait_for(seen, "/press-01/stroke_setpoint/set/result", proc)])
        assert result["ok"] is True and result["value"] == 35, result
        rate = data.rsplit("/", 1)[0] + "/strokes_per_minute"
        deadline = time.monotonic() + 60
        while json.loads(seen.get(rate, b"{}")).get("value") not in (35, 0):
            assert time.monotonic() < deadline, seen.get(rate)
            time.sleep(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _connect_when_up(client: Any, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the demo ended early"
        try:
            client.connect("127.0.0.1", port)
            return
        except (ConnectionRefusedError, TimeoutError):
            assert time.monotonic() < deadline, "the demo's broker never listened"
            time.sleep(0.2)


def _wait_for(seen: dict[str, bytes], suffix: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while True:
        found = [topic for topic in list(seen) if topic.endswith(suffix)]
        if found:
            return found[0]
        assert proc.poll() is None, "the demo ended early"
        assert time.monotonic() < deadline, f"nothing on *{suffix}: {sorted(seen)[:20]}"
        time.sleep(0.1)
