"""A command's round trip under load (issue 12): publish on a tag's `/set` topic -> its
`/set/result` answer arriving, at 10 commands/s, while the gateway polls at scenario d's full
load (Modbus 4 x 250 tags @ 100 ms, device payloads QoS 1); then the same commands against a
gateway with no polling load (one device, only the writable tag, polled every second), in the
same run, so that the loaded figure is also a ratio on a busy box.

`python -m bench.command_roundtrip --seconds 30 --json out.json`; `--smoke` (CI, via
`bash bench/run --smoke`): 2 x 250 tags @ 200 ms and a few seconds per phase.

Each command carries an `id` (echoed in its result, DESIGN.md "Commands") and a distinct
value; a result is matched by its id and must read back the value sent. Every command must
get exactly one answer: missing and duplicate answers are reported, and make the exit status 1.
Reuses the harness's simulator process, broker, device entries and subscriber.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from bench.harness import Scenario, Sources, Subscriber, _NoAliases, device_entries, metrics
from bench.measure import ProcessSampler, percentile
from tests.fixtures_mqtt import Mosquitto
from tests.procs import free_port, stop_process, wait_for

SITE = "bench"
WRITABLE_TAG = "sp"
WRITABLE_BASE_ADDRESS = 200
"""Device n's writable holding register is 200 + n: inside the 0..249 the bench tags already
read (no extra request per poll), never a machine model's register, and one per device so
that two devices on one unit never write the same register."""
MIN_WRITE_INTERVAL = "10ms"
"""Far below the 100 ms between two commands for one tag (10/s on one device at most)."""
RESULT_FILTER = f"{SITE}/+/+/+/{WRITABLE_TAG}/set/result"


class BenchError(Exception):
    """The bench could not run (a part did not start or answer in time)."""


@dataclass
class Sent:
    device: str
    value: int
    at: float  # monotonic
    wall: float = 0.0  # time.time(), to compare with the result's `ts` (the same clock)


@dataclass
class Answer:
    ok: bool
    value: object
    error: str | None
    at: float  # monotonic
    confirmed: float | None = None
    """The result's `ts` (time.time()): when the gateway had the read-back, on the same box's
    clock as Sent.wall."""


@dataclass
class Ledger:
    """Every command sent and every answer received, by command id (thread-safe: paho's
    thread adds the answers)."""

    sent: dict[str, Sent] = field(default_factory=dict)
    answers: dict[str, list[Answer]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, ids: list[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.answers)


class Commander:
    """A paho client that publishes commands and collects their results."""

    def __init__(self, broker: Mosquitto) -> None:
        self.ledger = Ledger()
        self.unmatched = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-commander")
        self.client.on_connect = lambda c, *_: c.subscribe(RESULT_FILTER, 1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(30):
            raise BenchError("the broker did not acknowledge the result subscription in 30 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            result = json.loads(msg.payload)
            command_id = result["id"]
            ts = result.get("ts")
            confirmed = datetime.fromisoformat(ts).timestamp() if ts else None
            answer = Answer(bool(result["ok"]), result.get("value"), result.get("error"), now,
                            confirmed)
        except (ValueError, KeyError, TypeError):
            self.unmatched += 1
            return
        with self.ledger.lock:
            if command_id not in self.ledger.sent:
                self.unmatched += 1
                return
            self.ledger.answers.setdefault(command_id, []).append(answer)

    def send(self, command_id: str, device: str, value: int) -> None:
        topic = f"{SITE}/a/l/{device}/{WRITABLE_TAG}/set"
        payload = json.dumps({"value": value, "id": command_id})
        with self.ledger.lock:
            self.ledger.sent[command_id] = Sent(device, value, time.monotonic(), time.time())
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def with_writable_tags(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The devices, each with one more tag: `sp`, a writable uint16 holding register."""
    return [{**device, "tags": [*device["tags"], {
        "name": WRITABLE_TAG, "table": "holding", "address": WRITABLE_BASE_ADDRESS + n,
        "type": "uint16", "writable": True, "min_write_interval": MIN_WRITE_INTERVAL}]}
        for n, device in enumerate(devices)]


def baseline_devices(modbus_port: int) -> list[dict[str, Any]]:
    """One device, only its writable tag, polled every second: no polling load."""
    entry = device_entries(Scenario("base", "baseline", devices=1, tags=0, poll=1.0),
                           [modbus_port], 0)
    entry[0]["name"] = "base-0"
    return with_writable_tags(entry)


def write_config(run_dir: Path, devices: list[dict[str, Any]], broker: Mosquitto,
                 http_port: int) -> Path:
    sink = {"url": broker.url, "qos": 1, "retain": False, "payload": "device",
            "batch_size": 10_000, "commands": True}
    config = {"gateway": {"id": "bench", "site": SITE, "shutdown_timeout": "2s",
                          "buffer": {"path": str(run_dir / "buffer.db")},
                          "http": {"listen": f"127.0.0.1:{http_port}"}},
              "devices": devices, "sinks": {"mqtt": sink}}
    path = run_dir / "gateway.yaml"
    path.write_text(yaml.dump(config, Dumper=_NoAliases))
    return path


def wait_until_ok(commander: Commander, devices: list[str], prefix: str,
                  timeout: float = 90.0) -> None:
    """Probe every device until a probe is answered ok: the gateway is subscribed and the
    device is up. Probes repeat every half second; they are not measured."""
    deadline = time.monotonic() + timeout
    for device in devices:
        n = 0
        while True:
            n += 1
            command_id = f"{prefix}-probe-{device}-{n}"
            commander.send(command_id, device, 60_000 + n % 1000)
            sent_at = time.monotonic()
            while time.monotonic() - sent_at < 0.5:
                with commander.ledger.lock:
                    answers = commander.ledger.answers.get(command_id)
                if answers:
                    break
                time.sleep(0.02)
            if answers and answers[0].ok:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{device} did not answer a command ok in {timeout:.0f} s"
                                 + (f" (last: {answers[0].error})" if answers else ""))


def send_paced(commander: Commander, devices: list[str], prefix: str, rate: float,
               seconds: float) -> tuple[list[str], float]:
    """`rate` commands/s for `seconds`, round-robin over `devices`, each on its deadline
    (start + n / rate: no drift from sleeping); values 1, 2, ... (distinct). Returns the ids
    and the latest any command went out after its deadline (seconds)."""
    ids: list[str] = []
    count = int(seconds * rate)
    started = time.monotonic()
    worst_lag = 0.0
    for n in range(count):
        due = started + n / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        worst_lag = max(worst_lag, time.monotonic() - due)
        command_id = f"{prefix}-{n}"
        commander.send(command_id, devices[n % len(devices)], 1 + n % 50_000)
        ids.append(command_id)
    end = started + count / rate  # the window is whole periods: commands/s = rate
    while (left := end - time.monotonic()) > 0:
        time.sleep(left)
    return ids, worst_lag


def summarise(ids: list[str], sent: dict[str, Sent],
              answers: dict[str, list[Answer]]) -> dict[str, Any]:
    """Counts and publish -> result latencies of the commands `ids` (pure)."""
    latencies, refusals, mismatched, missing, duplicated = [], [], 0, [], 0
    to_confirmed: list[float] = []  # publish -> the gateway has the read-back
    delivery: list[float] = []  # read-back -> its result arriving here
    ok = refused = 0
    for command_id in ids:
        got = answers.get(command_id, [])
        if not got:
            missing.append(command_id)
            continue
        duplicated += len(got) - 1
        first = got[0]
        latencies.append(first.at - sent[command_id].at)
        if first.confirmed is not None:
            to_confirmed.append(first.confirmed - sent[command_id].wall)
            delivery.append(latencies[-1] - to_confirmed[-1])
        if first.ok:
            ok += 1
            mismatched += first.value != sent[command_id].value
        else:
            refused += 1
            refusals.append(first.error)

    def ms(fraction: float, values: list[float] = latencies) -> float | None:
        return round(percentile(values, fraction) * 1000, 1) if values else None

    return {"sent": len(ids), "answered": len(ids) - len(missing), "ok": ok,
            "refused": refused, "missing": len(missing), "missing_ids": missing[:20],
            "duplicate_answers": duplicated, "read_back_mismatches": mismatched,
            "refusals": sorted(set(str(r) for r in refusals))[:5],
            "latency_p50_ms": ms(0.5), "latency_p99_ms": ms(0.99),
            "latency_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "latency_min_ms": round(min(latencies) * 1000, 1) if latencies else None,
            "to_confirmed_p50_ms": ms(0.5, to_confirmed),
            "to_confirmed_p99_ms": ms(0.99, to_confirmed),
            "result_delivery_p50_ms": ms(0.5, delivery),
            "result_delivery_p99_ms": ms(0.99, delivery)}


@dataclass
class Phase:
    key: str
    title: str
    devices: list[dict[str, Any]]
    seconds: float
    warmup: float
    measure_readings: bool


def run_phase(phase: Phase, workdir: Path, broker: Mosquitto, commander: Commander,
              rate: float) -> dict[str, Any]:
    run_dir = workdir / phase.key
    run_dir.mkdir()
    http_port = free_port()
    config_path = write_config(run_dir, phase.devices, broker, http_port)
    names = [d["name"] for d in phase.devices]
    tags = sum(len(d["tags"]) for d in phase.devices)
    subscriber = (Subscriber(broker, f"{SITE}/+/+/+", sample_every=1)
                  if phase.measure_readings else None)
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "warning", "run",
                             "--config", str(config_path)])
    try:
        if subscriber is not None:
            wait_for(lambda: subscriber.count > tags, 90, "the gateway's first readings")
        wait_until_ok(commander, names, phase.key)
        time.sleep(phase.warmup)  # steady state (polling, batching) before measuring
        sampler = ProcessSampler(proc.pid)
        before = metrics(http_port)
        if subscriber is not None:
            subscriber.reset()
        sampler.start()
        started = time.monotonic()
        ids, worst_lag = send_paced(commander, names, phase.key, rate, phase.seconds)
        sending = time.monotonic() - started
        readings = subscriber.count if subscriber is not None else 0
        usage = sampler.stop()
        after = metrics(http_port)
        deadline = time.monotonic() + 30
        while commander.ledger.answered(ids) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_process(proc)
        if subscriber is not None:
            subscriber.close()

    def delta(name: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.split("{")[0] == name)

    with commander.ledger.lock:
        result = summarise(ids, dict(commander.ledger.sent),
                           {k: list(v) for k, v in commander.ledger.answers.items()})
    result.update({
        "title": phase.title, "devices": len(names), "tags": tags,
        "poll_ms": int(float(phase.devices[0]["poll_interval"].removesuffix("ms"))),
        "seconds": round(sending, 1), "commands_per_s": round(len(ids) / sending, 2),
        "worst_send_lag_ms": round(worst_lag * 1000, 1),
        "gateway_cores": usage.cores, "gateway_rss_mib": usage.rss_mib,
        "produced_per_s": round(delta("gateway_readings_total") / sending),
        "poll_overruns": int(delta("gateway_poll_overruns_total")),
    })
    if subscriber is not None:
        result["readings_per_s"] = round(readings / sending)
    return result


def phases(smoke: bool, seconds: float, modbus_port: int) -> list[Phase]:
    if smoke:
        load = Scenario("d", "scenario d (smoke): Modbus 2 x 250 tags @ 200 ms, device payloads "
                        "QoS 1", devices=2, poll=0.2, payload="device")
    else:
        load = Scenario("d", "scenario d: Modbus 4 x 250 tags @ 100 ms (10,000/s), device "
                        "payloads QoS 1", devices=4, poll=0.1, payload="device")
    warmup = 1.0 if smoke else min(10.0, max(2.0, seconds / 6))
    loaded = with_writable_tags(device_entries(load, [modbus_port], 0))
    return [Phase("loaded", load.title + ", plus one writable tag per device", loaded,
                  seconds, warmup, measure_readings=True),
            Phase("baseline", "no polling load: 1 device, only the writable tag @ 1 s",
                  baseline_devices(modbus_port), seconds, 1.0, measure_readings=False)]


def ratio(loaded: float | None, baseline: float | None) -> float | None:
    if loaded is None or not baseline:
        return None
    return round(loaded / baseline, 2)


def run(smoke: bool, seconds: float, rate: float, broker_nodelay: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}, load average "
                   + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "smoke": smoke, "commands_per_s": rate, "seconds_per_phase": seconds,
        "broker_tcp_nodelay": broker_nodelay}
    with tempfile.TemporaryDirectory(prefix="gateway-cmdbench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto",
                           "set_tcp_nodelay true\n" if broker_nodelay else "")
        broker.start()
        sources = Sources(workdir, 0)
        commander = None
        try:
            commander = Commander(broker)
            for phase in phases(smoke, seconds, sources.modbus_port):
                results[phase.key] = run_phase(phase, workdir, broker, commander, rate)
                print(phase.key, results[phase.key], flush=True)
            results["unmatched_answers"] = commander.unmatched
        finally:
            if commander is not None:
                commander.close()
            sources.stop()
            broker.stop()
    for name in ("p50", "p99"):
        key = f"latency_{name}_ms"
        results[f"ratio_{name}_to_baseline"] = ratio(results["loaded"][key],
                                                     results["baseline"][key])
    return results


def problems(results: dict[str, Any]) -> list[str]:
    """Contract breaches: a command without exactly one answer."""
    found = []
    for key in ("loaded", "baseline"):
        phase = results[key]
        if phase["missing"]:
            found.append(f"{key}: {phase['missing']} of {phase['sent']} commands unanswered "
                         f"({', '.join(phase['missing_ids'][:5])})")
        if phase["duplicate_answers"]:
            found.append(f"{key}: {phase['duplicate_answers']} duplicate answers")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.command_roundtrip",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per phase (CI)")
    parser.add_argument("--seconds", type=float, default=30.0, help="commands per phase")
    parser.add_argument("--rate", type=float, default=10.0, help="commands per second")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--broker-nodelay", action="store_true",
                        help="mosquitto with `set_tcp_nodelay true` (default: its default, "
                        "Nagle on)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    seconds = 3.0 if args.smoke else args.seconds
    try:
        results = run(args.smoke, seconds, args.rate, args.broker_nodelay)
    except BenchError as exc:
        print(f"command round trip: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    found = problems(results)
    for problem in found:
        print(f"command round trip: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
