"""Micro-bench: hand-built and stdlib JSON payloads against orjson, in one run.

`python -m bench.json_encoding [--seconds S]`:
- per-tag payloads: the sink's hand-built common case against `orjson.dumps` of the same dict;
- device payloads (a 250-tag cycle): the sink's encoder, which uses orjson, against the same
  encoder on a cycle holding one float below 1e-4, which it hands to the stdlib encoder
  (`json.JSONEncoder`) because orjson writes such floats with other bytes;
- how many float32 values (shortest decimal, as the Modbus codec gives them) orjson writes with
  other bytes than the stdlib encoder, outside and inside that guard (the wire format is
  byte-for-byte DESIGN.md's: `1e-05`, where orjson writes `0.00001`).
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

from drivers.modbus.codec import shortest_float32
from gateway.models import Reading
from gateway.sinks.mqtt_wire import _JSON, encode_device_payload, encode_payload, format_ts


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


def float32_mismatches(samples: int = 100_000) -> dict[str, object]:
    """Float32 values (random bit patterns) that orjson writes differently from the stdlib
    encoder, inside the sink's guard (0 < |v| < 1e-4) and outside it (must be none)."""
    rng = random.Random(18)
    tried = inside = outside = 0
    example = ""
    while tried < samples:
        raw = struct.unpack(">f", struct.pack(">I", rng.getrandbits(32)))[0]
        if raw != raw or raw in (float("inf"), float("-inf")):
            continue
        value = shortest_float32(raw)
        tried += 1
        if orjson.dumps(value).decode() != _JSON.encode(value):
            guarded = 0 < abs(value) < 1e-4
            inside, outside = inside + guarded, outside + (not guarded)
            example = example or f"{value!r} -> {orjson.dumps(value).decode()}"
    return {"tried": tried, "differ_inside_guard": inside, "differ_outside_guard": outside,
            "example": example}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.json_encoding", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)
    cycle = _readings(250)
    tag = cycle[1]
    assert orjson_tag(tag) == encode_payload(tag), "per-tag payloads differ on a plain int"
    with_tiny = [cycle[0].model_copy(update={"value": 1e-05}), *cycle[1:]]
    results = {
        "per_tag_hand_built_per_s": per_second(lambda: encode_payload(tag), args.seconds),
        "per_tag_orjson_per_s": per_second(lambda: orjson_tag(tag), args.seconds),
        "device_stdlib_per_s": per_second(lambda: encode_device_payload(with_tiny),
                                          args.seconds),
        "device_orjson_per_s": per_second(lambda: encode_device_payload(cycle), args.seconds),
    }
    out: dict[str, object] = {k: round(v) for k, v in results.items()}
    out["per_tag_orjson_over_hand_built"] = round(
        results["per_tag_orjson_per_s"] / results["per_tag_hand_built_per_s"], 2)
    out["device_orjson_over_stdlib"] = round(
        results["device_orjson_per_s"] / results["device_stdlib_per_s"], 2)
    out["float32"] = float32_mismatches()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
