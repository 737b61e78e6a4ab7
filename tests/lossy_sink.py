"""A test double of a gateway built to lose data: an MQTT sink that acknowledges a batch to
the buffer even when the broker never got it (registered as sink type `acks_early` through a
dist-info in a temporary directory)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

from gateway.config import MqttSinkConfig
from gateway.errors import SinkError
from gateway.models import Reading
from gateway.sinks.mqtt import MqttSink


class AcksEarlyConfig(MqttSinkConfig):
    type: Literal["acks_early"] = "acks_early"  # type: ignore[assignment]


class AcksEarlyMqttSink(MqttSink):
    name = "acks_early"
    settings_model = AcksEarlyConfig

    async def send(self, readings: Sequence[Reading]) -> None:
        with contextlib.suppress(SinkError):  # the bug: a failed publish counts as sent
            await super().send(readings)
