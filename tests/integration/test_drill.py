"""`gateway drill` end to end (a subprocess running the gateway as its own subprocess): the
demo config loses nothing through every fault; a gateway built to lose data is caught."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.testing import DrillRunner, gateway_drill, run_drill  # noqa: F401  (the fixture, as pytest11 gives it)
from simulators.twin.drill import fill

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_drill_of_the_demo_config_loses_nothing(
        gateway_drill: DrillRunner) -> None:  # noqa: F811
    report = gateway_drill(ROOT / "config" / "modbus-demo.yaml", minutes=0.6, timeout=240)
    names = [f["name"] for f in report["faults"]]
    assert report["exit_code"] == 0, report["output"]
    assert report["lost"] == 0 and report["polled"] > 30
    assert set(report["delivered"]) == {"mqtt", "influxdb"}
    assert all(n == report["polled"] for n in report["delivered"].values())
    for fault in ("broker killed and back", "database down and back", "gateway SIGKILLed",
                  "plc 127.0.0.1:5020 silent", "plc 127.0.0.1:5020 restarted",
                  "buffer disk full"):
        assert fault in names
    assert all(f["recovery_s"] is not None for f in report["faults"]), report["output"]


def test_drill_catches_a_sink_that_acks_before_the_broker(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "acks_early-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acks-early\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[gateway.sinks]\nacks_early = tests.lossy_sink:AcksEarlyMqttSink\n")
    config = {
        "gateway": {"id": "lossy", "site": "plant"},
        "devices": [{"name": "press", "driver": "modbus", "poll_interval": "50ms",
                     "reconnect_max_backoff": "1s",
                     "connection": {"host": "192.0.2.1", "port": 502, "unit_id": 1},
                     "tags": [{"name": "temperature", "table": "holding", "address": 0,
                               "type": "float32"}]}],
        "sinks": {"uplink": {"type": "acks_early", "url": "mqtt://192.0.2.2:1883", "qos": 1}}}
    path = tmp_path / "lossy.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    report = run_drill(path, minutes=0.5, timeout=240, env=env)
    broker = next(f for f in report["faults"] if f["name"] == "broker killed and back")
    assert report["exit_code"] == 1, report["output"]
    assert broker["lost"] > 0 and report["lost"] >= broker["lost"]
    assert "LOST" in report["output"]


@pytest.mark.parametrize("used_pages", [0, 1, 2, 15])
def test_the_disk_full_fault_fills_a_real_disk_to_the_last_byte(
        tmp_path: Path, used_pages: int) -> None:
    """On a 1 MiB tmpfs with one page in use, the buffered filler raised ENOSPC when it
    closed (the tail of a chunk written in part), which stopped the drill at its disk fault."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        (disk / "in-use").write_bytes(b"x" * 4096 * used_pages)
        fill(disk / "filler")
        assert os.statvfs(disk).f_bavail == 0
        fill(disk / "second")  # already full: nothing to write, no error
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
