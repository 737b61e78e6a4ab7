"""One MQTT connection for a sink (paho-mqtt 2.x): the client and its settings, connecting and
reconnecting, the retained online status with the offline last will. What it carries is the
sink's business: `on_connected`, `on_acks`, `on_lost`, `on_message` and `on_subscribe` are its
hooks, all called on the event loop.

paho runs on the gateway's event loop, not on a thread of its own (paho's external-loop API:
its socket watched with `add_reader`/`add_writer`, `loop_misc` every second). With
`loop_start()` every publish wrote a byte to a socket pair to wake paho's thread, which then
took the GIL from the event loop to write the message and to read each PUBACK, and handed the
acknowledgements back through the loop's self-pipe: that thread and its wake-ups were about a
third of the gateway's CPU in Neuron's scenario (py-spy; docs/performance.md). Only the
blocking connect (DNS, TCP, the TLS handshake) runs on a worker thread. The client itself
reads PUBACKs in bulk and writes a pass's messages in one `send` (gateway/sinks/mqtt_client.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from gateway import __version__
from gateway.backoff import Backoff
from gateway.config import MqttSinkConfig
from gateway.models import iso_z, utc_now
from gateway.sinks.mqtt_client import new_client

log = logging.getLogger("gateway.sinks.mqtt")

MISC_INTERVAL = 1.0
"""Seconds between paho's keepalive checks (`loop_misc`: PINGREQ, a broker gone quiet)."""
PROBE_TIMEOUT = 2.0
"""Seconds the TLS probe of a broker that closed the connection may take."""
TLS_RECORDS = (b"\x15", b"\x16")
"""The first byte of a TLS server's answer to a ClientHello: an alert or a handshake record."""


def expects_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether HOST:PORT answers a TLS ClientHello with a TLS record: a TLS listener does, an
    MQTT one closes the connection or answers garbage."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # writes the ClientHello into `outgoing`, then wants the answer
    try:
        with socket.create_connection((host, port), timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(outgoing.read())
            first = sock.recv(1)
    except OSError:
        return False
    return first in TLS_RECORDS


@dataclass(frozen=True)
class BrokerAddress:
    """A broker URL taken apart: where to connect, the URL safe to log (credentials in the URL,
    mqtt://user:pw@host, never reach a log line) and those credentials."""

    host: str
    port: int
    url: str
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        return cls(host, port, f"{parts.scheme}://{host}:{port}",
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)


class BrokerLogin(Protocol):
    """The settings every MQTT sink's config has for reaching its broker."""

    @property
    def url(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def ca(self) -> str | None: ...
    @property
    def cert(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def insecure(self) -> bool: ...


def log_in(client: mqtt.Client, config: BrokerLogin, address: BrokerAddress) -> None:
    """The client's credentials (the config's user, else the URL's) and TLS for mqtts://."""
    username, password = address.username, address.password
    if config.username:
        username = config.username
        password = config.password.get_secret_value() if config.password else None
    if username:
        client.username_pw_set(username, password)
    if config.url.startswith("mqtts://"):
        client.tls_set(ca_certs=config.ca, certfile=config.cert, keyfile=config.key,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(config.insecure)


def without_nagle(client: mqtt.Client) -> None:
    """Send each packet at once (TCP_NODELAY) on every connection the client opens. With
    Nagle's algorithm a small packet waits for the ACK of the one before it, and Linux delays
    that ACK up to 40 ms: a command's PUBACK followed by its result message took 40 ms more
    than the write itself (bench/command_roundtrip.py: 45 -> 4 ms p50 unloaded with the
    broker's side set too)."""
    client.on_socket_open = lambda client, userdata, sock: no_delay(sock)


def no_delay(sock: Any) -> None:
    setsockopt = getattr(sock, "setsockopt", None)  # a websocket wrapper has none
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttSession:
    """Connects on `start()` and keeps reconnecting (1-30 s) until `close()`."""

    def __init__(self, config: MqttSinkConfig, gateway_id: str, status_topic: str) -> None:
        self.config = config
        self.gateway_id = gateway_id
        self.status_topic = status_topic
        self.address = BrokerAddress.parse(config.url)
        self.host, self.port, self.url = self.address.host, self.address.port, self.address.url
        self.mqtt5 = config.protocol == "5"
        self.connected = False
        self.on_connected: Callable[[], None] = lambda: None
        self.on_lost: Callable[[str], None] = lambda reason: None
        self.on_acks: Callable[[Iterable[int]], None] = lambda mids: None
        self.on_message: Callable[[mqtt.MQTTMessage], None] = lambda message: None
        self.on_subscribe: Callable[[list[Any]], None] = lambda codes: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._connect_failures = 0
        self._answered = False  # the broker answered this connection's CONNECT
        self._early_close: str | None = None  # why a connection closed before the CONNACK
        self._probing = False
        self._closing = False
        self._reconnected = asyncio.Event()
        self._first_answer = asyncio.Event()  # the first connect succeeded or failed
        self._socket_gone = asyncio.Event()
        self._watched: int | None = None  # the file descriptor of paho's socket, while watched
        self._connector: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[Any] | None = None  # the connecting thread's result
        self._misc: asyncio.TimerHandle | None = None
        # PUBACKs are queued here and handed to the sink once per pass of the event loop
        # rather than one call per message.
        self._acks: deque[int] = deque()
        self._drain_scheduled = False
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        config = self.config
        client = new_client(CallbackAPIVersion.VERSION2,
                            client_id=config.client_id or f"shopfloor-{self.gateway_id}",
                            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311)
        log_in(client, config, self.address)
        client.will_set(self.status_topic, self.status("offline"), qos=1, retain=True)
        # paho 2.2 silently loses QoS 1 messages past 65,535 queued: cap the queue well below.
        client.max_queued_messages_set(config.max_queued_messages)
        # No in-flight window in paho (0 = unlimited; the queue cap above and the batch bound what
        # is outstanding): with a window, paho 2.2 rescans every outstanding message on each
        # PUBACK (`_update_inflight`), which cut QoS 1 throughput to a third (measured here:
        # 5,900 vs 17,700 msg/s).
        client.max_inflight_messages_set(0)
        client.on_socket_open = self._socket_opened
        client.on_socket_close = self._socket_closed
        client.on_socket_register_write = self._wants_to_write
        client.on_socket_unregister_write = self._written
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = lambda client, userdata, message: self.on_message(message)
        client.on_subscribe = (lambda client, userdata, mid, codes, properties:
                               self.on_subscribe(codes))
        return client

    def status(self, state: str) -> bytes:
        status: dict[str, Any] = {"state": state, "gateway": self.gateway_id}
        if state == "online":
            status |= {"since": iso_z(utc_now()), "version": __version__}
        return json.dumps(status).encode()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        keepalive = max(1, int(self.config.keepalive))
        if self.mqtt5:
            # MQTT 5 splits 3.1.1's clean session: a clean start on the first connect, and
            # the session kept `session_expiry` seconds after a disconnect (0: not at all).
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = int(self.config.session_expiry)
            self.client.connect_async(self.host, self.port, keepalive=keepalive,
                                      clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                      properties=properties)
        else:
            self.client.connect_async(self.host, self.port, keepalive=keepalive)
        self._connector = asyncio.create_task(self._keep_connected(),
                                              name=f"mqtt connection to {self.url}")
        self._misc = self._loop.call_later(MISC_INTERVAL, self._check_keepalive)

    async def _keep_connected(self) -> None:
        """Connect, and again 1-30 s (with jitter) after each failure or lost connection."""
        backoff = Backoff(initial=2.0, cap=30.0)  # 1-2 s, then up to 15-30 s
        while not self._closing:
            self._socket_gone.clear()
            try:
                # DNS, TCP and the TLS handshake block: not on the event loop. Shielded, so
                # that close() can wait for a connect under way rather than leave its socket.
                self._connecting = asyncio.ensure_future(asyncio.to_thread(self.client.reconnect))
                await asyncio.shield(self._connecting)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, unreachable, TLS, DNS: retried
                self._connect_failed(f"cannot connect to {self.url}: {exc or type(exc).__name__}",
                                     logging.WARNING)
            else:
                await self._socket_gone.wait()
                if self.connected or self._answered:
                    backoff.reset()
            if not self._closing:
                await asyncio.sleep(backoff.next())

    async def close(self) -> None:
        """Publish the offline status (a clean DISCONNECT discards the last will), then
        disconnect. Never raises."""
        self._closing = True
        self._first_answer.set()
        try:
            if self.connected:
                info = self.client.publish(self.status_topic, self.status("offline"), qos=1,
                                           retain=True)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    await asyncio.to_thread(info.wait_for_publish, 2.0)
        except Exception as exc:  # close never raises
            log.debug("mqtt: could not publish the offline status: %s", exc)
        with contextlib.suppress(Exception):
            self.client.disconnect()  # queued: the event loop writes it, then paho closes
            if self._watched is not None:
                await asyncio.wait_for(self._socket_gone.wait(), 2.0)
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(BaseException):
                await self._connector
        if self._connecting is not None and not self._connecting.done():
            # paho's connect timeout is 5 s; its socket, if it gets one, is closed below
            await asyncio.wait([self._connecting], timeout=self.client.connect_timeout + 1)
        if self._misc is not None:
            self._misc.cancel()
        with contextlib.suppress(Exception):
            self.client._sock_close()  # one still open after 2 s (no answer to DISCONNECT)
        self.connected = False

    async def wait_first_answer(self, seconds: float) -> None:
        """Up to `seconds` for the first connect to succeed or fail."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_answer.wait(), seconds)

    async def wait_ready(self, seconds: float) -> None:
        """Up to `seconds`; less when a lost connection comes back meanwhile."""
        if self.connected:  # failed while connected: a plain pause
            await asyncio.sleep(seconds)
            return
        self._reconnected.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reconnected.wait(), seconds)

    # -- paho's socket on the event loop -----------------------------------------------------

    def _socket_opened(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        no_delay(sock)  # on the connecting thread
        self._on_loop(self._watch, sock.fileno())

    def _watch(self, fd: int) -> None:
        assert self._loop is not None
        self._watched = fd
        self._loop.add_reader(fd, self._readable)

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch)

    def _unwatch(self) -> None:
        assert self._loop is not None
        if self._watched is not None:
            self._loop.remove_reader(self._watched)
            self._loop.remove_writer(self._watched)
            self._watched = None
        self._socket_gone.set()

    def _wants_to_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch_writes)

    def _watch_writes(self) -> None:
        assert self._loop is not None
        if self._watched is not None:
            self._loop.add_writer(self._watched, self.client.loop_write)

    def _written(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unwatch_writes)

    def _unwatch_writes(self) -> None:
        assert self._loop is not None
        if self._watched is not None:
            self._loop.remove_writer(self._watched)

    def _readable(self) -> None:
        """Everything the socket has: paho reads a bounded number of packets a call, and both
        the client's read-ahead (`buffered`) and TLS (`pending`) may hold bytes the selector
        cannot see."""
        client = self.client
        buffered = getattr(client, "buffered", None)
        while client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            if buffered is not None and buffered():
                continue
            sock = client.socket()
            pending = getattr(sock, "pending", None)
            if pending is None or not pending():
                return

    def _check_keepalive(self) -> None:
        assert self._loop is not None
        if self._closing:
            return
        if self.client.socket() is not None:
            self.client.loop_misc()  # PINGREQ; closes a connection whose broker went quiet
        self._misc = self._loop.call_later(MISC_INTERVAL, self._check_keepalive)

    def _on_loop(self, callback: Callable[..., object], *args: Any) -> None:
        """Now when on the event loop's thread, else soon on it (the connecting thread)."""
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._call(callback, *args)

    # -- paho callbacks (on the event loop) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._answered = True
        if reason.is_failure:
            self._connect_failed(f"broker {self.url} refused the connection: "
                                 f"{reason_text(reason, properties)}", logging.ERROR)
            return
        if self._connect_failures:
            log.info("mqtt: connected to %s after %d failed attempt(s)", self.url,
                     self._connect_failures)
        else:
            log.info("mqtt: connected to %s", self.url)
        self._connect_failures = 0
        self._early_close = None
        self.on_connected()
        self._publish_online()
        self._call(self._set_connected, True)

    def _closed_before_connack(self, reason: Any) -> None:
        """paho reports only "Unspecified error" when the broker closes the connection right
        after CONNECT. The usual cause is `mqtt://` aimed at a TLS port: the broker took the
        CONNECT for a broken TLS handshake. Probed once per outage (on a worker thread, at
        most PROBE_TIMEOUT), since the answer does not change between retries."""
        if self._early_close is not None:
            self._connect_failed(self._early_close, logging.ERROR)
        elif not self._probing and self._loop is not None:
            self._probing = True
            self._loop.create_task(self._probe_early_close(reason))

    async def _probe_early_close(self, reason: Any) -> None:
        try:
            tls = not self.config.url.startswith("mqtts://") and await asyncio.to_thread(
                expects_tls, self.host, self.port)
        finally:
            self._probing = False
        self._early_close = (
            f"the broker at {self.host}:{self.port} seems to expect TLS: use mqtts://"
            if tls else f"{self.url} closed the connection before answering CONNECT "
            f"({reason})")
        self._connect_failed(self._early_close, logging.ERROR)

    def _connect_failed(self, message: str, level: int) -> None:
        """The first failure of an outage at `level`, repeats (every 1-30 s) at debug."""
        self._on_loop(self._first_answer.set)
        self._connect_failures += 1
        if self._connect_failures == 1:
            log.log(level, "mqtt: %s (retrying every 1-30 s)", message)
        else:
            log.debug("mqtt: %s (attempt %d)", message, self._connect_failures)

    def _publish_online(self) -> None:
        """The retained online status; retried while paho's queue is full of the messages
        of a batch that failed with the connection."""
        if not self.client.is_connected():
            return
        info = self.client.publish(self.status_topic, self.status("online"), qos=1,
                                   retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.debug("mqtt: paho's queue is full; the online status follows in 0.2 s")
            self._call(self._call_later, 0.2, self._publish_online)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        answered, self._answered = self._answered, False
        if not answered and not self._closing:  # closed before any CONNACK: a failed connect
            self._closed_before_connack(reason)
        elif self._closing:
            log.info("mqtt: disconnected from %s", self.url)
        elif self._connect_failures == 0:  # not after each failed attempt of an outage
            log.warning("mqtt: disconnected from %s: %s", self.url,
                        reason_text(reason, properties))
        self._call(self._set_connected, False)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self._acks.append(mid)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._call(self._drain_acks)

    def _call(self, callback: Callable[..., object], *args: Any) -> None:
        """Soon on the event loop (the thread-safe wake-up only from another thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(callback, *args)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(callback, *args)

    # -- on the event loop -------------------------------------------------------------------

    def _call_later(self, delay: float, callback: Callable[[], object]) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, callback)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._first_answer.set()
        if connected:
            self._reconnected.set()
        else:  # a batch in flight fails now rather than at its deadline
            self.on_lost(f"connection to the MQTT broker at {self.url} lost")

    def _drain_acks(self) -> None:
        self._drain_scheduled = False
        acks = []
        while self._acks:  # popleft is safe against paho's thread appending meanwhile
            acks.append(self._acks.popleft())
        self.on_acks(acks)


def reason_text(reason: Any, properties: Any) -> str:
    """A CONNACK's or DISCONNECT's reason with its code, and MQTT 5's reason string if the
    broker sent one: `Not authorized (reason code 135: ...)`."""
    text = f"{reason} (reason code {getattr(reason, 'value', reason)}"
    reason_string = getattr(properties, "ReasonString", None)
    return text + (f": {reason_string})" if reason_string else ")")
