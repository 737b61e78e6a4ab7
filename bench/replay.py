"""Replay scenario (issue 18): a backlog drained as cheaply as the live path?

    python -m bench.replay [--readings 1000000] [--seconds 20] [--json FILE]

One run, one mosquitto, one VictoriaMetrics (the InfluxDB sink, v2 API), one Modbus simulator:

1. live: scenario a of the harness (40 devices x 250 tags @ 100 ms, device payloads QoS 1 +
   InfluxDB) for `--seconds`: the gateway's CPU per reading delivered, cores / readings/s.
2. replay: a buffer holding `--readings` readings for both sinks (cycles of 250, written by
   `DurableBuffer.append` as the gateway writes them while its sinks are down), the same sinks
   back, the same 40 devices polling once a minute (the drain, not polling, is measured). From
   the first message to the last reading acknowledged by both sinks: CPU per reading drained.

The figure is the ratio replay / live (target <= 1.5). Not in the CI smoke run (minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.harness import (
    BENCH_TAGS,
    Scenario,
    Sources,
    Subscriber,
    device_entries,
    metrics,
    run_scenario,
)
from bench.measure import cpu_seconds, memory_kib
from gateway.buffer import DurableBuffer
from gateway.metrics import Counters, Gauges
from gateway.models import Reading
from tests.fixtures_influx import VictoriaMetricsServer
from tests.fixtures_mqtt import Mosquitto
from tests.procs import free_port, stop_process, wait_for

LIVE = Scenario("a", "live: Modbus 40 x 250 tags @ 100 ms, device payloads QoS 1 + InfluxDB",
                devices=40, poll=0.1, payload="device", influx=True)
SINKS = ("mqtt", "influxdb")


def fill_backlog(path: Path, devices: list[str], readings: int) -> None:
    """`readings` readings of 250-reading device cycles, 100 ms apart per device, ending a
    minute ago, pending for both sinks: what an outage of both sinks leaves behind."""
    buffer = DurableBuffer(path, SINKS, counters=Counters(), gauges=Gauges())
    cycles = readings // BENCH_TAGS
    first = datetime.now(UTC) - timedelta(minutes=1) - timedelta(
        milliseconds=100 * cycles // len(devices))
    try:
        for n in range(cycles):
            device = devices[n % len(devices)]
            ts = first + timedelta(milliseconds=100 * (n // len(devices)))
            buffer.append([Reading(device=device, tag=f"r{i}", value=(n + i) % 65536,
                                   source_ts=ts) for i in range(BENCH_TAGS)])
    finally:
        buffer.close()


def influx_sent(http_port: int) -> float:
    return sum(v for k, v in metrics(http_port).items()
               if k.startswith("gateway_sink_sent_total") and 'sink="influxdb"' in k)


def replay(workdir: Path, broker: Mosquitto, sources: Sources, influx_url: str,
           readings: int, timeout: float) -> dict[str, Any]:
    run_dir = workdir / "replay"
    run_dir.mkdir()
    devices = device_entries(LIVE, sources.modbus_ports, sources.opcua_port)
    for device in devices:
        device["poll_interval"] = "60s"
    buffer_path = run_dir / "buffer.db"
    began = time.monotonic()
    fill_backlog(buffer_path, [d["name"] for d in devices], readings)
    filled_s = time.monotonic() - began
    backlog = readings // BENCH_TAGS * BENCH_TAGS
    http_port = free_port()
    config = {"gateway": {"id": "bench", "site": "bench", "shutdown_timeout": "2s",
                          "buffer": {"path": str(buffer_path)},
                          "http": {"listen": f"127.0.0.1:{http_port}"}},
              "devices": devices,
              "sinks": {"mqtt": {"url": broker.url, "qos": 1, "retain": False,
                                 "payload": "device", "batch_size": 10_000},
                        "influxdb": {"url": influx_url, "api": "v2", "token": "bench",
                                     "org": "bench", "bucket": "bench", "batch_size": 5000,
                                     "flush_interval": "1s"}}}
    config_path = run_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subscriber = Subscriber(broker, "bench/#", sample_every=1)
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "warning", "run",
                             "--config", str(config_path)])
    try:
        wait_for(lambda: subscriber.count > 0, 120, "the first replayed message")
        cpu0, t0, mqtt0 = cpu_seconds(proc.pid), time.monotonic(), subscriber.count
        influx0 = influx_sent(http_port)
        wait_for(lambda: subscriber.count >= backlog and influx_sent(http_port) >= backlog,
                 timeout, f"{backlog:,} readings at both sinks")
        cpu, elapsed = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        drained = subscriber.count - mqtt0
        influx_drained = influx_sent(http_port) - influx0
        rss, peak = memory_kib(proc.pid)
    finally:
        stop_process(proc)
        subscriber.close()
    if drained < backlog // 2:
        raise SystemExit(f"error: {backlog - drained:,} of {backlog:,} readings arrived before "
                         "the measurement could start: a larger --readings")
    return {"backlog": backlog, "fill_seconds": round(filled_s, 1),
            "drain_seconds": round(elapsed, 1), "drained_per_s": round(drained / elapsed),
            "influx_drained": round(influx_drained),
            "cpu_seconds": round(cpu, 2), "us_per_reading": round(1e6 * cpu / drained, 2),
            "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(peak / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="of the live phase")
    parser.add_argument("--timeout", type=float, default=900.0, help="for the drain")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.readings < BENCH_TAGS or args.seconds <= 0:
        parser.error(f"--readings >= {BENCH_TAGS}, --seconds > 0")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-replay-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        influx = VictoriaMetricsServer(workdir / "victoria-metrics")
        influx.start()
        sources = Sources(workdir, 0)
        try:
            live = run_scenario(LIVE, workdir, broker, sources, influx.url, args.seconds,
                                min(10.0, max(2.0, args.seconds / 6)))
            print("live", live, flush=True)
            drained = replay(workdir, broker, sources, influx.url, args.readings,
                             args.timeout)
            print("replay", drained, flush=True)
        finally:
            sources.stop()
            influx.stop()
            broker.stop()
    live_us = 1e6 * live["cores"] / max(1, live["readings_per_s"])
    result = {"live": live, "replay": drained, "live_us_per_reading": round(live_us, 2),
              "replay_vs_live": round(drained["us_per_reading"] / live_us, 2)}
    print(f"live {live['readings_per_s']:,}/s at {live['cores']} cores = {live_us:.2f} us per "
          f"reading; replay of {drained['backlog']:,}: {drained['drained_per_s']:,}/s, "
          f"{drained['us_per_reading']} us per reading = {result['replay_vs_live']} x live "
          "(target <= 1.5)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
