"""Micro-bench: the durable buffer's cost per reading for 250-reading device cycles.

`python -m bench.buffer_cycles [--cycles N]`: a fresh buffer in a temporary directory, two
sinks; N cycles of 250 readings (a device poll: one device, one timestamp, uint16 ints and
float32 temperatures, a unit on a fifth) appended one per call, then:
- append: CPU microseconds per reading of `append` (the file and the in-memory tail);
- live read: a sink that keeps up (reads and acks each cycle from the in-memory tail);
- backlog read: a sink that fell behind (the tail holds none of it) reads everything back from
  the file in batches of 10,000 and acks each, as a sink draining a backlog does;
- file bytes per reading after the appends (the write-ahead log checkpointed into it).
Figures are process CPU time (time.process_time), best of `--repeat` runs, with the garbage
collector set as `gateway run` sets it (frozen at start, young threshold 50,000).
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.buffer import DurableBuffer
from gateway.metrics import Counters, Gauges
from gateway.models import Reading

CYCLE = 250


def cycles(count: int) -> list[list[Reading]]:
    start = datetime(2026, 12, 3, tzinfo=UTC)
    result = []
    for n in range(count):
        ts = start + timedelta(milliseconds=100 * n)
        result.append([Reading(device=f"dev-{n % 40}", tag=f"r{i}", source_ts=ts,
                               value=(i * 7 + n if i % 2 else round(20.0 + i / 7, 2)),
                               unit="degC" if i % 5 == 0 else None)
                       for i in range(CYCLE)])
    return result


def run_once(batches: list[list[Reading]]) -> dict[str, float]:
    total = len(batches) * CYCLE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "buffer.db"
        buffer = DurableBuffer(path, ["live", "behind"], counters=Counters(), gauges=Gauges(),
                               memory_rows=CYCLE)
        live = 0.0
        began = time.process_time()
        for batch in batches:
            buffer.append(batch)
        appended = time.process_time() - began
        # The live sink: read and ack what the tail holds, per cycle, in a second buffer pass.
        live_buffer = DurableBuffer(Path(tmp) / "live.db", ["live"], counters=Counters(),
                                    gauges=Gauges())
        for batch in batches:
            live_buffer.append(batch)
            began = time.process_time()
            last, got = live_buffer.read("live", 10_000)
            live_buffer.ack("live", last)
            live += time.process_time() - began
        live_buffer.close()
        with closing(sqlite3.connect(path)) as db:  # the log's pages into the file
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
        began = time.process_time()
        read = 0
        while True:
            last, got = buffer.read("behind", 10_000)
            if not got:
                break
            read += len(got)
            buffer.ack("behind", last)
        backlog = time.process_time() - began
        assert read == total, (read, total)
        buffer.close()
    return {"append_us": appended / total * 1e6, "live_read_us": live / total * 1e6,
            "backlog_read_us": backlog / total * 1e6, "file_bytes": size / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    batches = cycles(args.cycles)
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    runs = [run_once(batches) for _ in range(args.repeat)]
    best = {key: min(r[key] for r in runs) for key in runs[0]}
    print(f"{args.cycles} cycles x {CYCLE} readings, best of {args.repeat}: "
          f"append {best['append_us']:.2f} us/reading, live read+ack "
          f"{best['live_read_us']:.2f} us, backlog read+ack {best['backlog_read_us']:.2f} us, "
          f"file {best['file_bytes']:.1f} bytes/reading")


if __name__ == "__main__":
    main()
