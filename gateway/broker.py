"""An embedded MQTT broker (amqtt) for `gateway demo`: no external service needed."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)

# amqtt 0.12 logs every connection and packet (and `transitions` every state change) at INFO.
_NOISY_LOGGERS = ("amqtt", "transitions")


class LostClientWrites(logging.Filter):
    """Drops asyncio's `socket.send() raised exception.`: asyncio says it for every write to a
    connection whose peer is gone, and amqtt's publish tasks queued for a client that just
    vanished each write once more before the broker notices (30 lines in 1 ms). A subscriber
    going away is normal for a broker, not a fault worth a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("socket.send() raised exception")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """`async with EmbeddedBroker(port=1883) as broker:` then `broker.url`. Binds 127.0.0.1
    only and allows anonymous clients: it is for demos on one machine, not for production.
    `port=0` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.url = f"mqtt://{host}:{self.port}"
        self._broker: Broker | None = None
        self._quiet = LostClientWrites()

    def _config(self) -> dict[str, Any]:
        # amqtt 0.12's `plugins` section replaces the deprecated `auth`, `topic-check` and
        # `sys_interval` keys. Naming plugins also keeps amqtt's defaults out: the packet and
        # event loggers and the $SYS plugin, which publishes broker statistics every 20 s.
        # One TCP listener only (no websocket).
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def __aenter__(self) -> EmbeddedBroker:
        for noisy in _NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)
        logging.getLogger("asyncio").addFilter(self._quiet)
        self._broker = Broker(self._config())
        await self._broker.start()
        log.info("embedded MQTT broker at %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._broker is not None:
                broker, self._broker = self._broker, None
                await _shutdown(broker, SHUTDOWN_TIMEOUT)
        finally:
            logging.getLogger("asyncio").removeFilter(self._quiet)


SHUTDOWN_TIMEOUT = 10.0


async def _shutdown(broker: Broker, timeout: float) -> None:
    """amqtt's orderly shutdown, or past `timeout` its sockets closed by force.

    Why: amqtt 0.12's shutdown can wait forever on a client handler's reader task (seen in an
    hour-long drill: the broker "killed" for the broker fault never let go of its clients, so
    the drill hung while the gateway went on publishing to it). The sockets are taken before
    the shutdown starts, since it forgets its sessions first."""
    servers = [s.instance for s in broker._servers.values() if getattr(s, "instance", None)]
    writers = [getattr(handler.writer, "_writer", None)
               for _, handler in broker._sessions.values()]
    try:
        await asyncio.wait_for(broker.shutdown(), timeout)
    except TimeoutError:
        log.warning("embedded MQTT broker: shutdown took over %gs; closing its sockets", timeout)
        for server in servers:
            server.close()
        for writer in writers:
            if writer is not None:
                writer.transport.abort()
