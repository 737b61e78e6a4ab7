"""A real mosquitto on a free loopback port, and an MQTT subscriber that collects messages."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.procs import Service, free_port

MOSQUITTO = "/usr/sbin/mosquitto"


class Mosquitto:
    """mosquitto with persistence in a temp dir, so that a kill and restart on the same port
    keeps retained messages and queued QoS 1 sessions, as a production broker would."""

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            # Save sessions every second, so that a SIGKILLed broker comes back with its
            # subscribers' persistent sessions (the fault tests count every message).
            "autosave_interval 1\n"
            # The default (1000) drops QoS 0 messages to slow subscribers; tests count every one.
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            # As root, mosquitto switches to its own user, which cannot write to the test's
            # private temp dirs: it would then save no sessions at all ("Error saving
            # in-memory database ... Permission denied") and a restart would forget every
            # subscriber. Keep the user it was started as.
            + ("user root\n" if os.geteuid() == 0 else "")
            + "log_dest stdout\n" + extra_config)
        self.service = Service("mosquitto", [MOSQUITTO, "-c", str(conf)], self.port, workdir)

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.resume()  # a stopped process would not act on SIGTERM
        self.service.stop()

    def kill(self) -> None:
        self.service.kill()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its connections open but answers nothing, like a hung
        server or a silently dropped network."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        proc = self.service.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that kill or restart it."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@dataclass
class Message:
    topic: str
    payload: Any
    retain: bool


class MqttCollector:
    """A paho subscriber that records every message on a topic filter."""

    def __init__(self, host: str, port: int, topic: str = "#", qos: int = 1,
                 persistent: bool = False) -> None:
        """`persistent`: a session the broker keeps (and queues QoS 1 messages for) while this
        subscriber is disconnected, e.g. across a broker restart."""
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   # unique: a reused id would inherit another test's
                                   # persistent session and its queued messages
                                   client_id=f"collector-{uuid.uuid4().hex[:12]}",
                                   clean_session=not persistent)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_disconnect = lambda *_: self._subscribed.clear()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        with self._lock:
            self.messages.append(Message(msg.topic, payload, bool(msg.retain)))

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        """Until the collector is (again) connected and subscribed, e.g. after a restart."""
        if not self._subscribed.wait(timeout):
            raise TimeoutError("collector did not (re)subscribe")

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.snapshot() if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = 10.0,
                 what: str = "messages") -> list[Message]:
        """Blocking: do not call from a coroutine whose loop must keep running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                             f"got {len(self.snapshot())} messages")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_collector() -> Iterator[Callable[..., MqttCollector]]:
    collectors: list[MqttCollector] = []

    def make(host: str, port: int, topic: str = "#", qos: int = 1,
             persistent: bool = False) -> MqttCollector:
        collector = MqttCollector(host, port, topic, qos, persistent)
        collectors.append(collector)
        return collector

    yield make
    for collector in collectors:
        collector.close()


@dataclass
class TlsBroker:
    broker: Mosquitto
    url: str
    ca: Path
    client_cert: Path
    client_key: Path
    username: str = "gateway"
    password: str = "s3cret-pw"


def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """mosquitto with a TLS listener that requires a client certificate signed by a test CA
    and a username/password (no anonymous access)."""
    import subprocess

    pki = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    for name, cn in (("server", "127.0.0.1"), ("client", "gateway")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-addext", f"subjectAltName=IP:{cn}" if name == "server" else
                 "subjectAltName=DNS:gateway",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-copy_extensions", "copy",
                 "-out", f"{name}.crt", cwd=pki)
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pki / "passwd"), "gateway",
                    "s3cret-pw"], check=True, capture_output=True)
    for path in pki.iterdir():
        path.chmod(0o644)  # mosquitto may drop privileges when run as root
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), extra_config="")
    conf = broker.service.argv[-1]
    text = Path(conf).read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
    text += (f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
             f"keyfile {pki / 'server.key'}\nrequire_certificate true\n"
             f"password_file {pki / 'passwd'}\n")
    Path(conf).write_text(text)
    broker.start()
    yield TlsBroker(broker, f"mqtts://127.0.0.1:{broker.port}", pki / "ca.crt",
                    pki / "client.crt", pki / "client.key")
    broker.stop()
