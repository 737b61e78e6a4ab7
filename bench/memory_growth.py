"""How a gateway's memory grows in its first minutes (issue 18's memory target).

    python -m bench.memory_growth --devices 40 --seconds 70 [--tags 250] [--tracemalloc]

Starts the harness's Modbus source (one port per device) and a mosquitto, runs `gateway run`
as its own process on N devices x 250 uint16 tags @ 1 s with device payloads (`--devices 500
--tags 30` is Neuron's scenario, g), and prints that process's anonymous and file-backed RSS
every 5 s. `--tracemalloc` runs the gateway in this process instead (the harness's imports,
the simulators' pymodbus server and its aiohttp among them, then count too) and prints the
Python heap's largest holders at the end. Not in CI.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Scenario, Sources, _NoAliases, device_entries
from bench.measure import rss_mib
from tests.fixtures_mqtt import Mosquitto
from tests.procs import free_port


def memory_devices(devices: int, tags: int, ports: list[int]) -> list[dict[str, Any]]:
    """N devices x M uint16 tags @ 1 s, device n polling ports[n] (scenario e's shape)."""
    scenario = Scenario("e", "memory", devices=devices, tags=tags, poll=1.0, payload="device",
                        own_ports=True)
    return device_entries(scenario, ports, 0)


def _watch(seconds: float, trace: bool) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(5)
        print(f"{time.monotonic() - started:5.0f} s  {rss_mib()}", flush=True)
    if trace:
        gc.collect()
        print(f"Python heap {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:20]:
            print(stat)
    os.kill(os.getpid(), signal.SIGTERM)  # the gateway's own clean stop


def _watch_child(command: list[str], seconds: float) -> int:
    """Run the gateway as its own process, print its RSS every 5 s, then stop it."""
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", *command])
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds and gateway.poll() is None:
            time.sleep(5)
            print(f"{time.monotonic() - started:5.0f} s  {rss_mib(gateway.pid)}", flush=True)
        if gateway.poll() is not None:
            print(f"the gateway exited early: {gateway.returncode}")
            return 1
        gateway.send_signal(signal.SIGTERM)
        return gateway.wait(30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--tags", type=int, default=250, help="uint16 tags per device")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)
    from gateway.cli import main as gateway_main

    with tempfile.TemporaryDirectory(prefix="gateway-memory-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        sources = Sources(work, 0, args.devices)
        try:
            config = {"gateway": {"id": "bench", "site": "bench",
                                  "buffer": {"path": str(work / "buffer.db")},
                                  "http": {"listen": f"127.0.0.1:{free_port()}"}},
                      "devices": memory_devices(args.devices, args.tags, sources.modbus_ports),
                      "sinks": {"mqtt": {"url": broker.url, "payload": "device",
                                         "batch_size": 10_000}}}
            (work / "gateway.yaml").write_text(yaml.dump(config, Dumper=_NoAliases))
            del config
            command = ["--log-level", "warning", "run", "--config", str(work / "gateway.yaml")]
            if not args.tracemalloc:
                return _watch_child(command, args.seconds)
            tracemalloc.start(3)
            threading.Thread(target=_watch, args=(args.seconds, True), daemon=True).start()
            return gateway_main(command)
        finally:
            sources.stop()
            broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
