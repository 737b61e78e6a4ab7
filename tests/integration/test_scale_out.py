"""Two gateways side by side, each owning its devices, publishing to one broker."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures_mqtt import Mosquitto, MqttCollector
from tests.procs import free_port

pytestmark = pytest.mark.integration


def gateway_config(tmp_path: Path, gateway_id: str, device: str, broker: Mosquitto) -> Path:
    path = tmp_path / f"{gateway_id}.yaml"
    path.write_text(textwrap.dedent(f"""\
        gateway:
          id: {gateway_id}
          site: scaleout
          buffer: {{path: {tmp_path / gateway_id / 'buffer.db'}}}
          http: {{listen: "127.0.0.1:{free_port()}"}}
        devices:
          - name: {device}
            driver: hoststats
            area: hall
            poll_interval: 200ms
            tags: [{{name: uptime, metric: uptime_s}}]
        sinks:
          mqtt: {{url: "{broker.url}", qos: 1}}
        """))
    return path


def test_two_gateways_share_a_broker_without_collision(
        tmp_path: Path, mosquitto: Mosquitto, hoststats_plugin: None,
        mqtt_collector: Callable[..., MqttCollector]) -> None:
    # A site of its own: other tests on the shared broker leave retained status messages under
    # theirs, which must not be mistaken for a collision here.
    collector = mqtt_collector(mosquitto.host, mosquitto.port, "scaleout/#")
    procs = [subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config",
                               str(gateway_config(tmp_path, gw, device, mosquitto))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for gw, device in (("edge-a", "box-a"), ("edge-b", "box-b"))]
    try:
        def both_flowing(messages: list) -> bool:  # type: ignore[type-arg]
            topics = {m.topic for m in messages}
            counts = [sum(m.topic == f"scaleout/hall/{d}/uptime" for m in messages)
                      for d in ("box-a", "box-b")]
            wanted = {"scaleout/_gateway/edge-a/status", "scaleout/_gateway/edge-b/status"}
            return wanted <= topics and min(counts) >= 10
        collector.wait_for(both_flowing, 30, "both gateways' readings")
        # Distinct client ids: neither gateway kicks the other off the broker, so both stay
        # online (a collision would show as repeated offline/online flapping).
        status = [m.payload["state"] for m in collector.snapshot()
                  if m.topic.startswith("scaleout/_gateway/")]
        assert "offline" not in status
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(20) for proc in procs]
    assert codes == [0, 0]
    offline = {m.topic for m in collector.snapshot() if m.topic.startswith("scaleout/_gateway/")
               and m.payload["state"] == "offline"}
    assert offline == {"scaleout/_gateway/edge-a/status", "scaleout/_gateway/edge-b/status"}
