"""The scaling curve: readings/s, CPU and RSS of the gateway at 1k, 10k, 50k and 100k tags,
device payloads and per-tag (MQTT QoS 1), drawn as one PNG.

`python -m bench.scaling [--seconds 10] [--tags 1000,10000,50000,100000] [--png docs/scaling.png]
[--json out.json]`; `--plot-only out.json` redraws from saved results. Every point polls devices
of 250 uint16 registers every 1 s, each on its own Modbus TCP connection (one per PLC, as in a
plant), through the same harness as bench/run (a real mosquitto, the Modbus simulator in its
own process). Needs the bench extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import BENCH_TAGS, Scenario, Sources, run_scenario
from tests.fixtures_mqtt import Mosquitto

PAYLOADS = ("device", "tag")


def measure(tag_counts: list[int], seconds: float, warmup: float) -> list[dict[str, Any]]:
    """One gateway run per (tag count, payload), in that order, on one broker and simulator."""
    points: list[dict[str, Any]] = []
    devices_max = max(max(1, t // BENCH_TAGS) for t in tag_counts)
    with tempfile.TemporaryDirectory(prefix="gateway-scaling-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto")
        broker.start()
        sources = Sources(workdir, 0, devices_max)
        try:
            for tags in tag_counts:
                for payload in PAYLOADS:
                    devices = max(1, tags // BENCH_TAGS)
                    scenario = Scenario(
                        f"{payload}-{tags}", f"{tags:,} tags @ 1 s, {payload} payloads",
                        devices=devices, poll=1.0, payload=payload, own_ports=True,
                        # per-tag past the broker's ceiling: start measuring once it flows
                        extra={"ready_readings": min(devices * BENCH_TAGS, 2_000)})
                    result = run_scenario(scenario, workdir, broker, sources, None, seconds,
                                          warmup)
                    point = {"tags": devices * BENCH_TAGS, "payload": payload,
                             "offered_per_s": devices * BENCH_TAGS,
                             **{k: result[k] for k in ("readings_per_s", "produced_per_s",
                                                       "cores", "rss_mib", "peak_rss_mib",
                                                       "latency_p50_ms", "latency_p99_ms",
                                                       "poll_overruns")}}
                    points.append(point)
                    print(json.dumps(point), flush=True)
        finally:
            sources.stop()
            broker.stop()
    return points


def plot(points: list[dict[str, Any]], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    panels = [("readings_per_s", "readings/s delivered to MQTT"), ("cores", "gateway CPU (cores)"),
              ("peak_rss_mib", "gateway RSS, peak (MiB)")]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for payload, style in zip(PAYLOADS, ("o-", "s--"), strict=True):
            series = [p for p in points if p["payload"] == payload]
            ax.plot([p["tags"] for p in series], [p[key] for p in series], style,
                    label=f"{payload} payloads")
        if key == "readings_per_s":
            offered = sorted({(p["tags"], p["offered_per_s"]) for p in points})
            ax.plot([t for t, _ in offered], [o for _, o in offered], ":", color="grey",
                    label="offered (tags x 1/s)")
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xscale("log")
        ax.set_xlabel("configured tags (250 per device, polled every 1 s)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", default="1000,10000,50000,100000",
                        help="comma-separated tag counts (multiples of 250)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per point")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--png", type=Path, default=Path("docs/scaling.png"))
    parser.add_argument("--json", type=Path, default=None, help="also write the points here")
    parser.add_argument("--plot-only", type=Path, default=None,
                        help="draw from this saved JSON instead of measuring")
    parser.add_argument("--title", default="Shopfloor Gateway, MQTT QoS 1, 2 shared cores "
                        "(bench/scaling.py)")
    args = parser.parse_args(argv)
    if args.plot_only:
        points = json.loads(args.plot_only.read_text())["points"]
    else:
        try:
            tag_counts = [int(t) for t in args.tags.split(",")]
        except ValueError:
            parser.error(f"--tags: not a list of numbers: {args.tags}")
        points = measure(tag_counts, args.seconds, args.warmup)
        if args.json:
            args.json.write_text(json.dumps({"seconds_per_point": args.seconds,
                                             "points": points}, indent=2))
    plot(points, args.png, args.title)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
