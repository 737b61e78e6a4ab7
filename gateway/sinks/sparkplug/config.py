"""Settings of a Sparkplug B sink (`type: sparkplug`), mirroring the YAML one-to-one."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from gateway.sinks import SinkSettings
from gateway.units import Duration

# Sparkplug ids are topic levels: no level separator, no wildcards (spec: UTF-8, no + # /).
_ID = r"^[^/#+\s]+$"


class SparkplugSinkConfig(SinkSettings):
    type: Literal["sparkplug"] = Field("sparkplug", description="sparkplug")
    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    username: str | None = None
    password: SecretStr | None = None
    ca: str | None = Field(None, description="CA file for mqtts://")
    cert: str | None = Field(None, description="Client certificate file for mqtts://")
    key: str | None = Field(None, description="Client key file for mqtts://")
    insecure: bool = Field(False, description="mqtts:// without hostname verification")
    group_id: str = Field(pattern=_ID, description="Sparkplug group id (required)")
    edge_node_id: str | None = Field(None, pattern=_ID,
                                     description="Sparkplug edge node id; default: gateway.id")
    primary_host_id: str | None = Field(
        None, pattern=_ID, description="Publish only while this host's spBv1.0/STATE says "
        "online; the backlog follows the births as historical data")
    client_id: str | None = Field(None, description="Defaults to shopfloor-<gateway id>-sparkplug")
    commands: bool = Field(False, description="Accept DCMD writes (not wired yet: a DCMD is "
                           "logged and refused)")
    keepalive: Duration = 30.0
    batch_size: int = Field(5000, gt=0, le=100000,
                            description="Readings per batch confirmed together (one QoS 1 "
                            "barrier message after the batch's QoS 0 messages)")
    max_rate: float | None = Field(
        None, gt=0, description="Readings per second this sink sends at most, so that a long "
        "backlog replays without flooding the far side; unset: as fast as it confirms")
    ack_timeout: Duration = Field(10.0, gt=0, description="How long a batch waits for the "
                                  "broker's confirmation before it is retried")
    barrier_topic: str | None = Field(
        None, description="Topic of the QoS 1 message that confirms each batch (outside "
        "spBv1.0/, nobody needs to subscribe); default: _sparkplug/<group>/<edge node>/barrier")
    state_file: str | None = Field(
        None, description="File keeping bdSeq across restarts; default: beside the buffer")

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        return url

    @field_validator("barrier_topic")
    @classmethod
    def _barrier(cls, topic: str | None) -> str | None:
        if topic is None:
            return None
        if not topic or re.search(r"[+#\x00]", topic) or topic.startswith(("spBv1.0/", "$")):
            raise ValueError("a plain topic outside spBv1.0/ and $SYS, without wildcards")
        return topic

    @field_validator("username", "client_id", "ca", "cert", "key", "edge_node_id",
                     "primary_host_id", "state_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        return None if value == "" else value
