"""The fault soak (issue 10; not part of CI): the demo plant for an hour, a fault every few
minutes, every reading counted by sequence, the gateway's memory sampled every minute.

    python -m bench.soak --minutes 60 --json soak.json [--config config/modbus-demo.yaml]

It runs `gateway drill` (the twins of the config's machines, local stand-ins of its sinks, and
the faults one after another: broker killed, database down, each PLC silent and restarted, the
gateway SIGKILLed, the buffer's disk full) stretched over `--minutes`, and samples the resident
memory of the drilled `gateway run` process once a minute. It prints one line per fault and a
memory line, writes both to `--json`, and exits as the drill does: 0 only when nothing was lost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SAMPLE_EVERY = 60.0


def _parent(pid: str) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[1]


def _descends_from(pid: str, ancestor: int) -> bool:
    seen = 0
    current: str | None = pid
    while current not in (None, "0", "1") and seen < 64:
        if current == str(ancestor):
            return True
        current = _parent(current)
        seen += 1
    return False


def gateway_rss_mib(drill_pid: int) -> float | None:
    """Resident memory of the drilled gateway (the drill's own `gateway run` child), MiB, or
    None between a SIGKILL and the restart. Only the drill's descendants count: another
    gateway on the box must not be sampled."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not _descends_from(proc.name, drill_pid):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if b"gateway" in cmdline and b"run" in cmdline:
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return None


def sample_memory(stop: threading.Event, samples: list[tuple[float, float]],
                  every: float, drill_pid: int) -> None:
    started = time.monotonic()
    while not stop.wait(every):
        rss = gateway_rss_mib(drill_pid)
        if rss is not None:
            samples.append((round(time.monotonic() - started, 1), round(rss, 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/modbus-demo.yaml")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--json", default="soak.json")
    parser.add_argument("--sample-every", type=float, default=SAMPLE_EVERY,
                        help="seconds between memory samples")
    args = parser.parse_args(argv)
    drill_report = Path(args.json).with_suffix(".drill.json")
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    drill = subprocess.Popen([sys.executable, "-m", "gateway", "drill", "--config",
                              args.config, "--minutes", str(args.minutes), "--json",
                              str(drill_report)])
    sampler = threading.Thread(target=sample_memory,
                               args=(stop, samples, args.sample_every, drill.pid), daemon=True)
    sampler.start()
    try:
        code = drill.wait()
    finally:
        stop.set()
        sampler.join(5)
    report: dict[str, Any] = json.loads(drill_report.read_text()) if drill_report.exists() else {}
    report["rss_mib"] = samples
    Path(args.json).write_text(json.dumps(report, indent=2))
    for fault in report.get("faults", []):
        print(f"{fault['name']}: lost {fault['lost']}, duplicates {fault['duplicates']}, "
              f"recovery {fault['recovery_s']} s")
    if samples:
        values = [rss for _, rss in samples]
        print(f"gateway RSS: first {values[0]} MiB, last {values[-1]} MiB, max {max(values)} "
              f"MiB over {len(values)} samples")
    print(f"polled {report.get('polled')}, delivered {report.get('delivered')}, "
          f"lost {report.get('lost')}, duplicates {report.get('duplicates')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
