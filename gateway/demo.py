"""`gateway demo`: simulated machines, an embedded MQTT broker and the gateway in one process,
with a live table of what arrives at the broker. Needs no external service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.errors import GatewayError
from gateway.live import default_log_path, live_view
from gateway.runtime import Gateway
from gateway.signals import stop_on_signals

log = logging.getLogger(__name__)
DEMO_SITE = "demo"
DEMO_STATE = "demo.json"
DEMO_KPI_INTERVAL = "5s"  # short, so the demo's OEE moves within a minute
# The simulated machines that make parts on a schedule (simulators/modbus/schedule.py).
DEMO_OEE: dict[str, dict[str, Any]] = {
    "press-01": {"running": {"tag": "running"}, "total_count": "cycle_counter",
                 "reject_count": "reject_counter", "ideal_cycle_time": "2s"},
    "packer-03": {"running": {"tag": "conveyor_running"}, "total_count": "pack_counter",
                  "good_count": "good_count", "ideal_cycle_time": "1s"},
}


def demo_config(modbus_port: int, mqtt_url: str, buffer_path: Path, http_port: int,
                influx_url: str | None = None, influx_api: str = "v2",
                opcua_endpoint: str | None = None, sparkplug: bool = False) -> dict[str, Any]:
    """The demo's gateway config: every simulated machine, every tag of its register map, and
    the OPC UA CNC (cnc-01) with every variable of its address space; `sparkplug` adds a
    Sparkplug B edge node (group `demo`, node `demo-gw`) on the same broker."""
    from simulators.modbus import register_map
    from simulators.opcua.address_space import gateway_tags

    devices = []
    for machine in register_map():
        devices.append({
            "name": machine["name"], "driver": "modbus",
            "area": machine.get("area", "demo"), "line": machine.get("line", "line-1"),
            "poll_interval": "1s",
            "connection": {"host": "127.0.0.1", "port": modbus_port,
                           "unit_id": machine["unit_id"]},
            "tags": machine["tags"],
            **({"oee": DEMO_OEE[machine["name"]]} if machine["name"] in DEMO_OEE else {}),
        })
    if opcua_endpoint:
        devices.append({
            "name": "cnc-01", "driver": "opcua", "area": "machining", "line": "line-1",
            "mode": "subscribe", "poll_interval": "1s",
            "connection": {"endpoint": opcua_endpoint, "timeout": "2s"},
            "tags": gateway_tags(),
        })
    sinks: dict[str, Any] = {"mqtt": {"url": mqtt_url, "qos": 1, "retain": True,
                                      "commands": True}}  # one setpoint per machine is writable
    if influx_url:
        sinks["influxdb"] = {"url": influx_url, "api": influx_api, "database": "telemetry",
                             "bucket": "telemetry", "org": "demo", "create_database": True}
    if sparkplug:
        sinks["sparkplug"] = {"type": "sparkplug", "url": mqtt_url, "group_id": DEMO_SITE}
    return {"gateway": {"id": "demo-gw", "site": DEMO_SITE,
                        "buffer": {"path": str(buffer_path)}, "shutdown_timeout": "3s",
                        "kpi_interval": DEMO_KPI_INTERVAL,
                        "http": {"listen": f"127.0.0.1:{http_port}"}},
            "devices": devices, "sinks": sinks}


async def run_demo(args: argparse.Namespace) -> int:
    try:
        from gateway.broker import EmbeddedBroker
    except ImportError as exc:  # the production image leaves the demo's broker out
        raise GatewayError(f"gateway demo needs the embedded MQTT broker ({exc}): "
                           "pip install amqtt, or run the demo from a source checkout") from exc
    from simulators.modbus import ModbusSimulator
    from simulators.opcua import OpcUaSimulator

    if args.device is not None:
        _check_device(args.device)
    # The embedded OPC UA server warns that its (deliberately) unsecured endpoint is unsecured.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    influx_url = args.influx_url or os.environ.get("GATEWAY_DEMO_INFLUX_URL") or None
    influx_api = args.influx_api or os.environ.get("GATEWAY_DEMO_INFLUX_API") or "v2"
    with demo_workdir() as workdir:
        async with (EmbeddedBroker(port=_free_or_any(args.mqtt_port)) as broker,
                    ModbusSimulator(port=args.modbus_port, seed=1) as simulator,
                    OpcUaSimulator(port=args.opcua_port, seed=1) as cnc):
            # Through YAML and the loader, so devices are validated exactly as `gateway run` does.
            http_port = _free_or_any(args.http_port)
            config = parse_config(yaml.safe_dump(demo_config(
                simulator.port, broker.url, workdir / "buffer.db", http_port, influx_url,
                influx_api, cnc.endpoint, args.sparkplug)), "<demo>", {})
            print(f"demo: Modbus simulator on 127.0.0.1:{simulator.port}, OPC UA CNC on "
                  f"{cnc.endpoint}, {len(config.devices)} machines; status page "
                  f"http://127.0.0.1:{http_port}/; sinks: {sink_names(config, broker.url)}; "
                  "Ctrl-C stops", flush=True)
            print(f"demo: watch what the broker receives: {mosquitto_sub_hint(broker.url)}",
                  flush=True)
            if missing := mosquitto_sub_missing():
                print(f"demo: {missing}", flush=True)
            log_path = workdir / "gateway.log" if workdir == demo_home() else default_log_path()
            _write_state(workdir, config, log_path)
            async with _watch(broker.url) as seen:
                try:
                    await _run(config, args, seen, broker.url, log_path)
                finally:
                    TEARDOWN_WATCHDOG.arm(TEARDOWN_LIMIT, log_path)
    return 0


TEARDOWN_LIMIT = 30.0  # seconds from the stop until the process must have ended


class TeardownWatchdog:
    """Ends the process if the demo's teardown stalls: the broker, simulators and viewer
    stop one after the other after the gateway has, and a newcomer pressing q must get the
    prompt back even if one of them never lets go (one CI run in about four saw the demo
    still alive 90 s after its summary). A thread, not a task: it must fire even if a stop
    blocks the event loop. Before it ends the process it says so and writes every thread's
    stack to the demo's log, so the stall can be found."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float, log_path: Path) -> None:
        self.disarm()
        self._timer = threading.Timer(seconds, self._fire, (seconds, log_path))
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @staticmethod
    def _fire(seconds: float, log_path: Path) -> None:
        print(f"demo: stopping took over {seconds:g}s; ending it now (the stacks of every "
              f"thread are in {log_path})", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError), open(log_path, "a") as log_file:
            log_file.write(f"demo: teardown stalled for {seconds:g}s; every thread's stack:\n")
            log_file.flush()
            faulthandler.dump_traceback(log_file, all_threads=True)
        os._exit(1)


TEARDOWN_WATCHDOG = TeardownWatchdog()


def demo_home() -> Path:
    """Where the demo keeps its buffer and log, kept after it ends for `gateway status`
    (env GATEWAY_DEMO_HOME moves it)."""
    home = os.environ.get("GATEWAY_DEMO_HOME")
    return Path(home) if home else Path(tempfile.gettempdir()) / f"gateway-demo-{os.getuid()}"


@contextlib.contextmanager
def demo_workdir() -> Iterator[Path]:
    """demo_home(), emptied of the last demo's buffer; a second demo running at the same time
    gets a temporary directory of its own instead (removed at its end)."""
    home = demo_home()
    home.mkdir(mode=0o700, exist_ok=True)
    with open(home / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            private = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
            try:
                yield private
            finally:
                shutil.rmtree(private, ignore_errors=True)
            return
        for old in [*home.glob("buffer.db*"), home / DEMO_STATE]:
            old.unlink(missing_ok=True)
        yield home


def _write_state(workdir: Path, config: GatewayConfig, log_path: Path) -> None:
    """What `gateway status` needs: the buffer, the status server, the devices."""
    state = {"buffer": str(config.gateway.buffer.path), "http": config.gateway.http.listen,
             "log": str(log_path), "devices": [d.name for d in config.devices]}
    (workdir / DEMO_STATE).write_text(json.dumps(state))


def read_demo_state() -> dict[str, Any] | None:
    """The last demo's state (None if no demo ran since the machine's temp dir was cleared)."""
    try:
        state: dict[str, Any] = json.loads((demo_home() / DEMO_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state


def sink_names(config: GatewayConfig, broker_url: str) -> str:
    """Every sink the demo writes to, with where it is."""
    from gateway.config import InfluxSinkConfig

    names = []
    for name, settings in config.sinks.items():
        if isinstance(settings, InfluxSinkConfig):
            target = (f"database {settings.database}" if settings.api == "v1"
                      else f"bucket {settings.bucket}")
            names.append(f"{name} ({settings.url}, API {settings.api}, {target})")
        else:
            names.append(f"{name} (embedded broker at {broker_url})")
    return ", ".join(names)


def _free_or_any(port: int) -> int:
    """`port` if nothing listens there, else any free port (the demo must not fail on it)."""
    from simulators.modbus.server import free_port

    if port:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass
    return free_port()


async def _run(config: GatewayConfig, args: argparse.Namespace, seen: dict[str, Any],
               broker_url: str, log_path: Path) -> None:
    gateway = Gateway(config)
    stop = stop_on_signals()
    if args.duration is not None:
        asyncio.get_running_loop().call_later(args.duration, stop.set)

    def messages() -> str:
        return f"{seen['_count']} messages at the broker ({len(seen) - 1} topics)"

    def footer() -> str:
        return f"{messages()}. Ctrl-C stops."

    install = [missing] if (missing := mosquitto_sub_missing()) else []

    def summary() -> list[str]:
        return [messages(), f"watch: {mosquitto_sub_hint(broker_url)}", *install]

    live = not args.no_live and sys.stdout.isatty()
    async with asyncio.TaskGroup() as group:
        if live:
            view = group.create_task(live_view(gateway.state, stop, summary, device=args.device,
                                               log_path=log_path))
        else:
            view = group.create_task(_log_progress(footer, stop))
        await gateway.run(stop)
        view.cancel()
    print(f"demo: stopped; the broker received {seen['_count']} messages; topics per "
          f"device: {_topics_per_device(seen)}", flush=True)
    if live:
        print(f"demo: the log of this run is in {log_path}", flush=True)


def _check_device(name: str) -> None:
    """`--device` names one of the demo's machines; an unknown one would show an empty view."""
    from simulators.modbus import register_map

    known = [machine["name"] for machine in register_map()] + ["cnc-01"]
    if name not in known:
        raise GatewayError(f"--device {name}: the demo has no such device; its devices are "
                           f"{', '.join(known)}")


def mosquitto_sub_missing(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """What to install when the hint's command is not on this machine (a fresh Debian or
    Ubuntu has the broker's package at most, not its clients), else None."""
    if which("mosquitto_sub") is not None:
        return None
    return "no mosquitto_sub here: sudo apt install mosquitto-clients"


def mosquitto_sub_hint(broker_url: str) -> str:
    """The command that shows what the gateway publishes, for the summary line."""
    host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
    return f"mosquitto_sub -h {host} -p {port} -t '{DEMO_SITE}/#' -v"


def _topics_per_device(seen: dict[str, Any]) -> str:
    """`cnc-01: 11, press-01: 12, ...`: the device is the topic level before the tag."""
    counts: dict[str, int] = {}
    for topic in seen:
        levels = topic.split("/")
        if len(levels) == 5 and levels[1] != "_gateway":
            counts[levels[3]] = counts.get(levels[3], 0) + 1
    return ", ".join(f"{device}: {n}" for device, n in sorted(counts.items())) or "none"


async def _log_progress(footer: Callable[[], str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        print(f"demo: {footer()}", flush=True)


@contextlib.asynccontextmanager
async def _watch(url: str) -> AsyncIterator[dict[str, Any]]:
    """Subscribe to everything the gateway publishes, as any MQTT client would."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    seen: dict[str, Any] = {"_count": 0}
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with lock:
            seen["_count"] += 1
            with contextlib.suppress(ValueError):
                seen[message.topic] = json.loads(message.payload)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gateway-demo-viewer")
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(f"{DEMO_SITE}/#", qos=0)
    client.connect_async(host, int(port))
    client.loop_start()
    try:
        yield seen
    finally:
        client.disconnect()
        # In a thread: joining paho's thread here would block the loop the embedded broker
        # answers on while that thread may still be waiting for it.
        await asyncio.to_thread(client.loop_stop)
