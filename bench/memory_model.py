"""What N tags hold in memory once the gateway is at rest, without sockets (issue 18's memory
target at 100,000 tags, which a shared box cannot poll at 1 s):

    python -m bench.memory_model --devices 400 --tags 250

Loads a config of N devices x M uint16 tags (written by a child process, so that making it
leaves no freed memory here to reuse), builds the Modbus drivers as `run` does, then feeds the
status state 76 cycles of every tag (the latest reading and full sparklines), and prints the
process's anonymous and file-backed RSS after each step. What
this leaves out and a running gateway adds: the connections, the buffer's in-memory tail
(at most 20,000 readings) and the batches in flight (see bench.memory_growth). Not in CI.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.measure import rss_mib


def write_config(path: Path, devices: int, tags: int) -> None:
    """(In the child process: the harness's imports stay out of the measured one.)"""
    import yaml

    from bench.harness import _NoAliases
    from bench.memory_growth import memory_devices

    ports = list(range(20_000, 20_000 + devices))
    config = {"gateway": {"id": "bench", "site": "bench"},
              "devices": memory_devices(devices, tags, ports),
              "sinks": {"mqtt": {"url": "mqtt://127.0.0.1:1883", "payload": "device"}}}
    path.write_text(yaml.dump(config, Dumper=_NoAliases))


def measure(path: Path) -> None:
    import drivers.modbus.driver  # noqa: F401  (what `run` imports for these devices)
    import gateway.http_server
    import gateway.runtime
    import gateway.sinks.mqtt  # noqa: F401
    from drivers.registry import load_driver
    from gateway.config import load_config
    from gateway.models import good_reading
    from gateway.state import RECENT_POINTS, TagState

    gc.collect()
    print(f"imports                 {rss_mib()}")
    config = load_config(path)
    gc.collect()
    print(f"config loaded           {rss_mib()}")
    built = [load_driver(device.driver)(device) for device in config.devices]
    gc.collect()
    print(f"{len(built)} drivers built       {rss_mib()}")
    state, start = TagState(), datetime.now(UTC)
    names = [[tag.name for tag in device.tags] for device in config.devices]
    for cycle in range(RECENT_POINTS + 16):
        ts = start + timedelta(seconds=cycle)
        for device, tag_names in zip(config.devices, names, strict=True):
            state.update([good_reading(device.name, name, cycle * 1.5 + 0.1, ts)
                          for name in tag_names])
    gc.collect()
    print(f"latest + full sparklines {rss_mib()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=400)
    parser.add_argument("--tags", type=int, default=250, help="uint16 tags per device")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.write:
        write_config(args.write, args.devices, args.tags)
        return 0
    with tempfile.TemporaryDirectory(prefix="gateway-memory-model-") as tmp:
        path = Path(tmp) / "gateway.yaml"
        subprocess.run([sys.executable, "-m", "bench.memory_model", "--devices",
                        str(args.devices), "--tags", str(args.tags), "--write", str(path)],
                       check=True, timeout=600)
        print(f"{args.devices} devices x {args.tags} tags")
        measure(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
