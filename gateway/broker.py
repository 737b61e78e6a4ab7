"""An embedded MQTT broker (amqtt) for `gateway demo`: no external service needed."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """`async with EmbeddedBroker(port=1883) as broker:` then `broker.url`. Binds 127.0.0.1
    only and allows anonymous clients: it is for demos on one machine, not for production."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        if port == 0:
            from simulators.modbus.server import free_port

            port = free_port(host)
        self.host = host
        self.port = port
        self.url = f"mqtt://{host}:{port}"
        self._broker: Broker | None = None

    async def __aenter__(self) -> EmbeddedBroker:
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # amqtt 0.12's own plugins
            self._broker = Broker(config)
            await self._broker.start()
        log.info("embedded MQTT broker at %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
