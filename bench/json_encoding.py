"""Micro-bench: the MQTT payloads as the sink builds them against orjson, in one run.

`python -m bench.json_encoding [--seconds S]`: per-tag payloads (the hand-built common case) and
device payloads (a 250-tag cycle, `json.JSONEncoder`) against `orjson.dumps` of the same dicts,
and how many of a set of float32 values orjson writes with other bytes than ours (the wire
format is byte-for-byte DESIGN.md's: Python's shortest repr, e.g. `1e-05`, where orjson writes
`0.00001`).
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from gateway.models import Reading, iso_z
from gateway.sinks.mqtt_wire import encode_device_payload, encode_payload, format_ts


def _readings(count: int) -> list[Reading]:
    """A 250-register device's cycle: uint16 ints and float32 temperatures, with a unit."""
    now = datetime.now(UTC)
    return [Reading(device="dev-0", tag=f"r{i}", source_ts=now,
                    value=(i * 7 if i % 2 else round(20.0 + i / 7, 2)),
                    unit="degC" if i % 5 == 0 else None)
            for i in range(count)]


def orjson_tag(reading: Reading) -> bytes:
    payload: dict[str, object] = {"value": reading.value, "quality": reading.quality.value,
                                  "ts": format_ts(reading)}
    if reading.unit is not None:
        payload["unit"] = reading.unit
    return orjson.dumps(payload)


def orjson_device(readings: list[Reading]) -> bytes:
    values = {r.tag: r.value for r in readings}
    units = {r.tag: r.unit for r in readings if r.unit is not None}
    latest = max(r.source_ts for r in readings)
    payload: dict[str, object] = {"ts": iso_z(latest),
                                  "values": values}
    if units:
        payload["units"] = units
    return orjson.dumps(payload)


def per_second(work: Callable[[], object], seconds: float) -> float:
    """Calls of `work` per second, the best of three slices of `seconds` / 3."""
    best = 0.0
    for _ in range(3):
        calls, started = 0, time.perf_counter()
        deadline = started + seconds / 3
        while time.perf_counter() < deadline:
            for _ in range(100):
                work()
            calls += 100
        best = max(best, calls / (time.perf_counter() - started))
    return best


def float32_mismatches(samples: int = 100_000) -> tuple[int, int, str]:
    """(values orjson writes differently from repr, values tried, an example)."""
    rng = random.Random(18)
    tried = differ = 0
    example = ""
    while tried < samples:
        value = struct.unpack(">f", struct.pack(">I", rng.getrandbits(32)))[0]
        if value != value or value in (float("inf"), float("-inf")):
            continue
        value = float(repr(struct.unpack(">f", struct.pack(">f", value))[0]))
        tried += 1
        if orjson.dumps(value).decode() != repr(value):
            differ += 1
            example = example or f"{value!r} -> {orjson.dumps(value).decode()}"
    return differ, tried, example


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.json_encoding", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    cycle = _readings(250)
    tag = cycle[1]
    assert orjson_tag(tag) == encode_payload(tag), "per-tag payloads differ on a plain int"
    assert orjson_device(cycle) == encode_device_payload(cycle), "device payloads differ"
    results = {
        "per_tag_hand_built_per_s": per_second(lambda: encode_payload(tag), args.seconds),
        "per_tag_orjson_per_s": per_second(lambda: orjson_tag(tag), args.seconds),
        "device_json_encoder_per_s": per_second(lambda: encode_device_payload(cycle),
                                                args.seconds),
        "device_orjson_per_s": per_second(lambda: orjson_device(cycle), args.seconds),
    }
    differ, tried, example = float32_mismatches()
    out: dict[str, object] = {k: round(v) for k, v in results.items()}
    out["per_tag_orjson_over_hand_built"] = round(
        results["per_tag_orjson_per_s"] / results["per_tag_hand_built_per_s"], 2)
    out["device_orjson_over_json_encoder"] = round(
        results["device_orjson_per_s"] / results["device_json_encoder_per_s"], 2)
    out["float32_values_orjson_writes_differently"] = f"{differ} of {tried} (e.g. {example})"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
