"""`gateway drill --config FILE`: the gateway (a `gateway run` subprocess, so that it can be
SIGKILLed) against the twins of its devices and stand-ins of its sinks, with one fault after
another, every reading counted by a sequence the drill adds to each device.

The drill's copy of the config adds a hidden tag `drill_sequence` to every Modbus and OPC UA
device (a holding uint32 at a free address; an OPC UA node in urn:shopfloor:drill) that counts
the reads covering it (OPC UA in subscribe mode: one step per poll interval). MQTT sinks point
at the embedded broker, which counts what it receives per sink (by client id); InfluxDB sinks at
a line-protocol receiver each; other sink types are left out (said in the report)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.config import ModbusDeviceConfig
from drivers.opcua.config import OpcUaDeviceConfig
from gateway.config import GatewayConfig, parse_config
from gateway.errors import GatewayError
from simulators.twin.drill_report import Phase, Received, Served, drill_report, render_table
from simulators.twin.runner import Twins
from simulators.twin.schedule import Schedule, fault_schedule
from simulators.twin.stand_ins import (
    SEQUENCE_FIELD,
    CountingBroker,
    LineProtocolReceiver,
    line_arrivals,
    mqtt_arrival,
)

DRILL_NAMESPACE = "urn:shopfloor:drill"
TMPFS_SIZE = "48m"


class DrillError(GatewayError):
    """The drill could not run (the gateway never delivered, a twin could not start)."""


def free_register(device: ModbusDeviceConfig) -> int:
    """The first holding address after every holding tag with room for a uint32."""
    ends = [t.address + t.size for t in device.tags if t.table == "holding"]
    address = max(ends, default=0)
    if address + 2 > 65536:
        used = {a for t in device.tags if t.table == "holding"
                for a in range(t.address, t.address + t.size)}
        address = next(a for a in range(65535) if a not in used and a + 1 not in used)
    return address


def with_sequences(raw: dict[str, Any], config: GatewayConfig) -> dict[str, Any]:
    """The drill's copy of the file: a `drill_sequence` tag on every Modbus and OPC UA device."""
    data = copy.deepcopy(raw)
    by_name = {d.name: d for d in config.devices}
    for device in data.get("devices") or []:
        parsed = by_name.get(device.get("name"))
        if not parsed or not parsed.enabled or any(
                t.get("name") == SEQUENCE_FIELD for t in device.get("tags", [])):
            continue
        if isinstance(parsed, ModbusDeviceConfig):
            device["tags"].append({"name": SEQUENCE_FIELD, "table": "holding",
                                   "address": free_register(parsed), "type": "uint32"})
        elif isinstance(parsed, OpcUaDeviceConfig):
            device["tags"].append({"name": SEQUENCE_FIELD,
                                   "node": f"nsu={DRILL_NAMESPACE};s={parsed.name}.seq"})
    return data


def stand_in_kind(sink_type: str, url: str) -> str:
    """mqtt for any sink that publishes plain readings to an mqtt(s):// broker (a plugin
    subclassing the MQTT sink too; not Sparkplug, whose payloads are protobuf), influxdb for
    InfluxDB sinks, else the type itself (no stand-in)."""
    if sink_type == "sparkplug":
        return sink_type
    if sink_type == "mqtt" or str(url).startswith(("mqtt://", "mqtts://")):
        return "mqtt"
    return sink_type


def fill(path: Path) -> None:
    """Write zeros to `path` until its filesystem has no byte left. Unbuffered: a buffered
    file keeps the tail of a partly written chunk and raises ENOSPC again when it closes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return  # not even room for the file: full already
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


class Drill:
    """One drill run; `await Drill(...).run()` returns the report."""

    def __init__(self, config_path: str, minutes: float, workdir: Path,
                 say: Callable[[str], None] = print) -> None:
        from simulators.twin.cli import load_both

        original, raw = load_both(config_path)
        self.raw = with_sequences(raw, original)
        self.config = parse_config(yaml.safe_dump(self.raw), config_path, {})
        self.minutes = minutes
        self.workdir = workdir
        self.say = say
        self.devices = [d.name for d in self.config.devices
                        if isinstance(d, ModbusDeviceConfig | OpcUaDeviceConfig) and d.enabled]
        self.blindable = [d.name for d in self.config.devices
                          if isinstance(d, OpcUaDeviceConfig) and d.mode == "subscribe"]
        self.received: Received = {}
        self.phases: list[Phase] = []
        self.notes: list[str] = []
        self.mqtt_sinks: dict[str, str] = {}  # client id -> sink
        self.influx: dict[str, LineProtocolReceiver] = {}
        self.broker: CountingBroker | None = None
        self.broker_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.tmpfs: Path | None = None
        self.twins: Twins | None = None

    # -- timing ------------------------------------------------------------------------------

    def fault_count(self, twins: Twins) -> int:
        return 2 + 2 * (len(twins.modbus) + len(twins.opcua)) + 2

    def schedule(self, twins: Twins) -> Schedule:
        return fault_schedule(self.minutes, self.fault_count(twins))

    @property
    def recover_timeout(self) -> float:
        backoff = max((d.reconnect_max_backoff for d in self.config.devices), default=30.0)
        return max(20.0, 2 * backoff + 10)

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        async with Twins(self.config, self.raw) as twins:
            self.twins = twins
            try:
                await self._start_sinks()
                self._mount_tmpfs()
                self._write_config(twins)
                self._start_gateway()
                await self._phases(twins)
            finally:
                self._stop_gateway()
                await self._stop_sinks()
                self._unmount_tmpfs()
        report = drill_report(self.phases, self.served(), self.received)
        report["notes"] = self.notes
        return report

    async def _phases(self, twins: Twins) -> None:
        schedule = self.schedule(twins)
        hold = schedule.hold_s
        faults: list[tuple[str, Callable[[Phase], Awaitable[None]], list[str]]] = [
            ("broker killed and back", self._broker_down, []),
            ("database down and back", self._database_down, []),
        ]
        for place, modbus in twins.modbus.items():
            units = [u.device for u in modbus.plan.units.values()]
            faults.append((f"plc {place} silent", self._silent(modbus), units))
            faults.append((f"plc {place} restarted", self._restart(modbus), units))
        for endpoint, opc in twins.opcua.items():
            devices = list(opc.plan.devices)
            faults.append((f"plc {endpoint} down", self._opcua_down(opc), devices))
            faults.append((f"plc {endpoint} restarted", self._restart(opc), devices))
        faults.append(("gateway SIGKILLed", self._gateway_killed, self.devices))
        faults.append(("buffer disk full", self._disk_full, []))
        total = len(faults) * schedule.rounds + 2
        start = time.time()
        self.say(f"drill [1/{total}] baseline: waiting for every device at every sink")
        await self._wait(lambda: self._fresh_everywhere(start, self.devices), 120,
                         "the first readings at every sink")
        await asyncio.sleep(min(3.0, hold))
        self.phases.append(Phase("baseline", 0.0, start, time.time()))
        rounds = [(r, fault) for r in range(1, schedule.rounds + 1) for fault in faults]
        for number, (round_number, (name, inject, affected)) in enumerate(rounds, 2):
            if schedule.rounds > 1:
                name = f"{name} (round {round_number})"
            self.say(f"drill [{number}/{total}] {name} ({hold:.0f}s)")
            slot_end = time.time() + schedule.slot_s
            await self._fault(name, inject, affected, hold)
            await asyncio.sleep(max(0.0, slot_end - time.time()))
        self.say(f"drill [{total}/{total}] draining")
        end = time.time()
        self.phases[-1].end = end
        since = self.phases[-1].start
        if not await self._wait(lambda: self._backlog_done(since, end, []), 60, "", fail=False):
            self.phases[-1].note = "some readings never arrived before the drill's end"

    async def _fault(self, name: str, inject: Callable[[Phase], Awaitable[None]],
                     affected: list[str], hold: float) -> None:
        started = time.time()
        if self.phases:
            self.phases[-1].end = started
        phase = Phase(name, started, started, started + 1e9, affected,
                      [d for d in affected if d in self.blindable])
        self.phases.append(phase)
        phase.cleared = await self._inject(phase, inject, hold)
        recovered = await self._wait(
            lambda: self._backlog_done(phase.start, phase.cleared, phase.blind)
            and self._fresh_everywhere(phase.cleared, affected), self.recover_timeout, "",
            fail=False)
        if not recovered:
            phase.note = (phase.note + f" not recovered {self.recover_timeout:.0f}s after "
                          "the fault").strip()
        await asyncio.sleep(1.0)

    async def _inject(self, phase: Phase, inject: Callable[[Phase], Awaitable[None]],
                      hold: float) -> float:
        phase.note = ""
        self._hold = hold
        await inject(phase)
        return time.time()

    # -- faults ------------------------------------------------------------------------------

    async def _broker_down(self, phase: Phase) -> None:
        if self.broker is None:
            phase.note = "no MQTT sink: skipped"
            return
        await self.broker.__aexit__(None, None, None)
        await asyncio.sleep(self._hold)
        await self._start_broker()

    async def _database_down(self, phase: Phase) -> None:
        if not self.influx:
            phase.note = "no InfluxDB sink: skipped"
            return
        for receiver in self.influx.values():
            await receiver.stop()
        await asyncio.sleep(self._hold)
        for receiver in self.influx.values():
            await receiver.start()

    def _silent(self, modbus: Any) -> Callable[[Phase], Awaitable[None]]:
        async def silent(phase: Phase) -> None:
            modbus.set_fault(None, "silent")
            await asyncio.sleep(self._hold)
            modbus.set_fault(None, "none")
        return silent

    def _opcua_down(self, opc: Any) -> Callable[[Phase], Awaitable[None]]:
        async def down(phase: Phase) -> None:
            await opc.stop()
            await asyncio.sleep(self._hold)
            await opc.start()
        return down

    def _restart(self, twin: Any) -> Callable[[Phase], Awaitable[None]]:
        async def restart(phase: Phase) -> None:
            await twin.stop()
            # a read answered as the server stopped may have gone down with its connection
            phase.kill_marks = self.last_served(phase.affected)
            await twin.start()
        return restart

    async def _gateway_killed(self, phase: Phase) -> None:
        assert self.proc is not None
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait, 30)
        phase.kill_marks = self.last_served()
        await asyncio.sleep(min(self._hold, 3.0))
        self._start_gateway()

    async def _disk_full(self, phase: Phase) -> None:
        if self.tmpfs is None:
            phase.note = ("skipped: the buffer's disk can be filled only on a small tmpfs, "
                          "mounted when the drill runs as root")
            return
        filler = self.tmpfs / "filler"
        await asyncio.to_thread(fill, filler)
        await asyncio.sleep(self._hold)
        filler.unlink(missing_ok=True)

    # -- parts -------------------------------------------------------------------------------

    async def _start_sinks(self) -> None:
        sinks: dict[str, Any] = {}
        for name, sink in self.config.sinks.items():
            kind = stand_in_kind(getattr(sink, "type", None) or name, getattr(sink, "url", ""))
            if kind in ("mqtt", "influxdb"):
                sinks[name] = kind
                self.received[name] = {}
            else:
                self.notes.append(f"sink {name} ({kind}) has no stand-in: left out")
        self._sink_types = sinks
        if "mqtt" in sinks.values():
            await self._start_broker()
        for name, kind in sinks.items():
            if kind == "influxdb":
                receiver = LineProtocolReceiver(self._on_lines(name))
                await receiver.start()
                self.influx[name] = receiver

    async def _start_broker(self) -> None:
        broker = CountingBroker(self._on_message, port=self.broker_port)
        self.broker = await broker.__aenter__()
        self.broker_port = broker.port

    def _on_message(self, client_id: str, topic: str, payload: bytes) -> None:
        sink = self.mqtt_sinks.get(client_id)
        found = mqtt_arrival(topic, payload, set(self.devices)) if sink else None
        if sink and found:
            self.received[sink].setdefault(found[0], []).append((found[1], time.time()))

    def _on_lines(self, sink: str) -> Callable[[str], None]:
        def on_lines(body: str) -> None:
            at = time.time()
            for device, number in line_arrivals(body):
                self.received[sink].setdefault(device, []).append((number, at))
        return on_lines

    async def _stop_sinks(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.__aexit__(None, None, None)
        for receiver in self.influx.values():
            await receiver.stop()

    def _write_config(self, twins: Twins) -> None:
        from simulators.modbus.server import free_port

        data = copy.deepcopy(twins.config)
        gateway = data.setdefault("gateway", {})
        buffer_dir = self.tmpfs or self.workdir
        gateway["buffer"] = {**(gateway.get("buffer") or {}),
                             "path": str(buffer_dir / "buffer.db")}
        gateway["http"] = {"listen": f"127.0.0.1:{free_port()}"}
        sinks = {}
        for name, kind in self._sink_types.items():
            sink = dict(data["sinks"][name])
            if kind == "mqtt":
                sink.update(url=f"mqtt://127.0.0.1:{self.broker_port}", client_id=f"drill-{name}")
                for key in ("ca", "cert", "key", "username", "password", "insecure"):
                    sink.pop(key, None)
                self.mqtt_sinks[f"drill-{name}"] = name
            else:
                sink["url"] = self.influx[name].url
                sink.pop("token", None)
            sinks[name] = sink
        data["sinks"] = sinks
        self.config_file = self.workdir / "drill.yaml"
        self.config_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def _start_gateway(self) -> None:
        import gateway as gateway_package

        self.starts += 1
        root = str(Path(gateway_package.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        with open(self.workdir / f"gateway-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env)

    def _stop_gateway(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def gateway_log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.workdir.glob("gateway-*.log")))

    def _mount_tmpfs(self) -> None:
        if os.geteuid() != 0:
            return
        target = self.workdir / "disk"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                                 str(target)], capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            self.tmpfs = target
        else:
            self.notes.append(f"no tmpfs for the buffer ({result.stderr.strip()}): the full "
                              "disk is skipped")

    def _unmount_tmpfs(self) -> None:
        if self.tmpfs is not None:
            subprocess.run(["umount", str(self.tmpfs)], capture_output=True, timeout=30)
            self.tmpfs = None

    # -- counting ----------------------------------------------------------------------------

    def last_served(self, among: Collection[str] | None = None) -> dict[str, int]:
        """The last sequence each device (of `among`, or every one) has served so far."""
        return {device: rows[-1][0] for device, rows in self.served().items()
                if rows and (among is None or device in among)}

    def served(self) -> Served:
        assert self.twins is not None
        served: Served = {}
        for modbus in self.twins.modbus.values():
            for unit in modbus.twins.values():
                if SEQUENCE_FIELD in unit.served:
                    served[unit.plan.device] = list(unit.served[SEQUENCE_FIELD])
        for opc in self.twins.opcua.values():
            for device in opc.plan.devices:
                served[device] = list(opc.served.get(f"{device}.{SEQUENCE_FIELD}", []))
        return served

    def _fresh_everywhere(self, since: float, devices: list[str]) -> bool:
        served = self.served()
        for by_device in self.received.values():
            for device in devices:
                numbers = {n for n, t in served.get(device, []) if t >= since}
                if not any(n in numbers for n, _ in by_device.get(device, [])):
                    return False
        return True

    def _backlog_done(self, since: float, before: float, blind: list[str]) -> bool:
        """Every sink has every reading served from `since` until `before` (a reading lost
        earlier is never waited for again)."""
        served = self.served()
        for by_device in self.received.values():
            for device, rows in served.items():
                if device in blind:
                    continue
                got = {n for n, _ in by_device.get(device, [])}
                if any(n not in got for n, t in rows if since <= t < before):
                    return False
        return True

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str,
                    fail: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.proc is not None and self.proc.poll() is not None and fail:
                raise DrillError(f"the gateway exited with {self.proc.returncode}:\n"
                                 f"{self.gateway_log()}")
            await asyncio.sleep(0.2)
        if fail:
            raise DrillError(f"timed out after {timeout:.0f}s waiting for {what}; gateway log:"
                             f"\n{self.gateway_log()}")
        return False


def drill_main(args: argparse.Namespace) -> int:
    if args.minutes <= 0:
        raise DrillError(f"--minutes must be positive, not {args.minutes}")
    with tempfile.TemporaryDirectory(prefix="gateway-drill-") as workdir:
        drill = Drill(args.config, args.minutes, Path(workdir))
        report = asyncio.run(drill.run())
    print(render_table(report), flush=True)
    for note in report["notes"]:
        print(f"note: {note}")
    verdict = "nothing lost" if report["lost"] == 0 else f"{report['lost']} readings LOST"
    print(f"drill: {report['polled']} polled, {verdict}, {report['duplicates']} duplicates")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["lost"] == 0 else 1


__all__ = ["Drill", "DrillError", "drill_main", "with_sequences"]
