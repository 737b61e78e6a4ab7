"""Micro-bench: what a DDATA metric costs, protobuf's message objects against the sink's
encoder (gateway/sinks/sparkplug/payload.py `device_data`), in one run.

`python -m bench.sparkplug_payload [--metrics N] [--repeats R]`: DDATA payloads of N metrics of
one poll (one source timestamp), best of R, microseconds a metric, for UInt16 registers
(Modbus), Doubles (OPC UA) and historical UInt16s (a backlog replayed); both encoders make the
same bytes (checked here, and by a property test).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from gateway.models import Reading, good_reading, utc_now
from gateway.sinks.sparkplug import payload as sp
from gateway.sinks.sparkplug.sparkplug_b_pb2 import Payload

Metrics = list[tuple[Reading, sp.MetricSpec, bool]]
PAYLOADS = 200


def protobuf_objects(seq: int, ts_ms: int, metrics: Metrics) -> tuple[bytes, int]:
    """DDATA the way protobuf's message objects write it (what `device_data` did before it
    wrote the common metrics itself; the property test's reference too)."""
    payload = Payload(timestamp=ts_ms, seq=seq)
    mismatched = sum(not sp.fill_metric(payload.metrics.add(), reading, spec,
                                        historical=historical)
                     for reading, spec, historical in metrics)
    return payload.SerializeToString(), mismatched


def workloads(count: int) -> dict[str, Metrics]:
    ts = utc_now()
    registers = [good_reading("d", f"r{n}", n * 257 % 65536, ts) for n in range(count)]
    doubles = [good_reading("d", f"x{n}", n * 0.37, ts) for n in range(count)]
    return {
        "UInt16": [(r, sp.MetricSpec(n + 1, sp.UINT16), False) for n, r in enumerate(registers)],
        "Double": [(r, sp.MetricSpec(n + 1, sp.DOUBLE), False) for n, r in enumerate(doubles)],
        "UInt16 historical": [(r, sp.MetricSpec(n + 1, sp.UINT16), True)
                              for n, r in enumerate(registers)],
    }


def us_per_metric(encode: Callable[[int, int, Metrics], tuple[bytes, int]], metrics: Metrics,
                  repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for seq in range(PAYLOADS):
            encode(seq % 256, 1_700_000_000_000, metrics)
        best = min(best, (time.perf_counter() - started) / PAYLOADS / len(metrics) * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sparkplug_payload", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    for name, metrics in workloads(args.metrics).items():
        if sp.device_data(1, 2, metrics) != protobuf_objects(1, 2, metrics):
            raise SystemExit(f"{name}: the encoders disagree")
        slow = us_per_metric(protobuf_objects, metrics, args.repeats)
        fast = us_per_metric(sp.device_data, metrics, args.repeats)
        print(f"{name:18} protobuf objects {slow:5.2f} us, device_data {fast:5.2f} us a metric "
              f"({slow / fast:.1f} x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
