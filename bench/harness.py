"""The benchmark harness: simulators, the gateway, a real mosquitto on loopback; reports
readings/s, the gateway's CPU and RSS, delivery latency, and the ratio to the raw ceilings
measured in the same run. `bash bench/run` (full), `bash bench/run --smoke` (CI)."""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from bench.ceilings import paho_qos1_ceiling, pymodbus_read_ceiling
from bench.measure import ProcessSampler, percentile
from simulators.modbus import register_map
from tests.fixtures_mqtt import Mosquitto
from tests.procs import free_port, port_open, wait_for


class Subscriber:
    """Counts messages and the delay from each reading's source timestamp to its arrival."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.count = 0
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            ts = json.loads(msg.payload)["ts"]
        except (ValueError, KeyError):
            return
        sent = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        with self._lock:
            self.count += 1
            if self.count % 10 == 0:
                self.latencies.append(now - sent)

    def reset(self) -> None:
        with self._lock:
            self.count, self.latencies = 0, []

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gateway_config(workdir: Path, modbus_port: int, broker: Mosquitto, copies: int,
                   poll: str) -> Path:
    """`copies` devices per simulated machine (all tags each), polled every `poll`."""
    devices = []
    for machine in register_map():
        for n in range(copies):
            devices.append({"name": f"{machine['name']}-{n}", "driver": "modbus",
                            "area": machine["area"], "line": machine["line"],
                            "poll_interval": poll,
                            "connection": {"host": "127.0.0.1", "port": modbus_port,
                                           "unit_id": machine["unit_id"]},
                            "tags": machine["tags"]})
    config = {"gateway": {"id": "bench", "site": "bench",
                          "buffer": {"path": str(workdir / "buffer.db")},
                          "http": {"enabled": False}},
              "devices": devices,
              "sinks": {"mqtt": {"url": broker.url, "qos": 1, "retain": False}}}
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_gateway_scenario(workdir: Path, modbus_port: int, broker: Mosquitto, copies: int,
                         poll: str, seconds: float) -> dict[str, Any]:
    tags = copies * sum(len(m["tags"]) for m in register_map())
    config = gateway_config(workdir, modbus_port, broker, copies, poll)
    subscriber = Subscriber(broker, "bench/#")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "warning", "run",
                             "--config", str(config)])
    try:
        wait_for(lambda: subscriber.count > tags, 60, "the gateway's first readings")
        time.sleep(min(5.0, seconds / 4))  # warm up
        sampler = ProcessSampler(proc.pid)
        subscriber.reset()
        sampler.start()
        started = time.monotonic()
        time.sleep(seconds)
        usage = sampler.stop()
        rate = subscriber.count / (time.monotonic() - started)
        latencies = list(subscriber.latencies)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        subscriber.close()
    return {"tags": tags, "poll": poll, "readings_per_s": round(rate),
            "cores": usage.cores, "rss_mib": usage.rss_mib, "peak_rss_mib": usage.peak_rss_mib,
            "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes (CI)")
    parser.add_argument("--seconds", type=float, default=60.0, help="per gateway scenario")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.smoke else args.seconds
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {_cores()} cores, "
                                          f"Python {platform.python_version()}"}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        modbus_port = free_port()
        simulator = subprocess.Popen([sys.executable, "-m", "simulators", "--modbus-port",
                                      str(modbus_port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: port_open(modbus_port), 30, "the simulator")
            results["paho_qos1_ceiling_per_s"] = round(
                paho_qos1_ceiling(broker.host, broker.port, 5_000 if args.smoke else 100_000))
            results["pymodbus_125_register_reads_per_s"] = round(
                pymodbus_read_ceiling("127.0.0.1", modbus_port, seconds=min(seconds, 10)))
            scenarios = [("per_tag_qos1_1s", 10, "1s"), ("per_tag_qos1_100ms", 10, "100ms")]
            if args.smoke:
                scenarios = [("per_tag_qos1_smoke", 1, "200ms")]
            for name, copies, poll in scenarios:
                result = run_gateway_scenario(workdir, modbus_port, broker, copies, poll,
                                              seconds)
                result["ratio_to_paho_ceiling"] = round(
                    result["readings_per_s"] / results["paho_qos1_ceiling_per_s"], 3)
                results[name] = result
                print(name, result, flush=True)
        finally:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(10)
            broker.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
