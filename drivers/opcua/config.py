"""The OPC UA device config: endpoint, security, mode and tags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from drivers.base import DeviceConfig, TagConfig
from drivers.opcua import nodeids
from gateway.strict import StrictModel
from gateway.units import Duration

DeadbandType = Literal["absolute", "percent"]

POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")


class OpcUaConnection(StrictModel):
    endpoint: str = Field(description="opc.tcp://host:port/path")
    security: str = Field("None", description="None | Basic256Sha256 | Aes128_Sha256_RsaOaep "
                          "| Aes256_Sha256_RsaPss")
    mode: Literal["Sign", "SignAndEncrypt"] = Field("SignAndEncrypt",
                                                   description="Message security mode")
    pki: str = Field("./data/pki", description="Folder for the gateway's application "
                     "certificate and key, generated on first start when not given by path")
    certificate: str | None = Field(None, description="The gateway's application certificate "
                                    "(DER or PEM); generated into `pki` when left out")
    private_key: str | None = Field(None, description="Private key of `certificate` (PEM)")
    server_certificate: str | None = Field(None, description="Pin the server's certificate: "
                                           "path to its DER or PEM file")
    server_fingerprint: str | None = Field(None, description="Pin the server's certificate: "
                                           "its SHA-256 fingerprint in hex (colons allowed)")
    trust: Literal["pinned", "any"] = Field("pinned", description="pinned: only a pinned "
                                            "server certificate is accepted; any: accept "
                                            "every server certificate (logged as a warning)")
    username: str = Field("", description="Empty means anonymous")
    password: SecretStr = Field(SecretStr(""), description="Password of username")
    user_certificate: str | None = Field(None, description="X.509 user identity: "
                                         "certificate path (instead of username)")
    user_private_key: str | None = Field(None, description="Private key of user_certificate")
    timeout: Duration = Field(4.0, gt=0, description="Connect and request timeout")

    @field_validator("security")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value in ("Basic128Rsa15", "Basic256"):
            raise ValueError(f"{value} is deprecated and insecure (SHA-1): use Basic256Sha256")
        if value not in POLICIES:
            raise ValueError(f"unknown security policy {value!r} (one of {', '.join(POLICIES)})")
        return value

    @field_validator("certificate", "private_key", "server_certificate", "user_certificate",
                     "user_private_key")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("server_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").replace(" ", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digits):
            raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
        return digits

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaConnection:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("user_certificate and user_private_key go together")
        if self.user_certificate and self.username:
            raise ValueError("choose one user identity: username or user_certificate")
        pinned = self.server_certificate or self.server_fingerprint
        if self.security != "None" and not pinned and self.trust != "any":
            raise ValueError(f"security {self.security} needs the server's certificate pinned "
                             "(server_certificate or server_fingerprint), or trust: any")
        return self


class OpcUaTag(TagConfig):
    node: str = Field(min_length=1, description='Node id, e.g. "ns=2;s=Spindle.Speed", or '
                      '"nsu=<namespace URI>;s=..." to survive namespace renumbering')
    server_deadband: float | None = Field(None, ge=0, description="Server-side deadband of "
                                          "this tag (subscribe mode); overrides the device's")
    server_deadband_type: DeadbandType | None = Field(None, description="absolute | percent; "
                                                      "overrides the device's")
    writable: bool = Field(False, description="Commands may write this node (a Write of its "
                           "Value attribute, in the node's DataType); off by default")
    min: float | None = Field(None, description="A written value below this is refused")
    max: float | None = Field(None, description="A written value above this is refused")

    @model_validator(mode="after")
    def _write_limits(self) -> OpcUaTag:
        if (self.min is not None or self.max is not None) and not self.writable:
            raise ValueError("min and max limit writes: they need writable: true")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        nodeids.parse(value)
        return value


class OpcUaDeviceConfig(DeviceConfig):
    driver: Literal["opcua"] = Field(description="opcua")
    mode: Literal["subscribe", "poll"] = Field("poll", description="subscribe or poll")
    connection: OpcUaConnection
    sampling_interval: Duration = Field(0.0, ge=0, description="Server sampling interval")
    queue_size: int = Field(10, ge=1, description="Server-side queue per monitored item")
    server_deadband: float | None = Field(
        None, ge=0, description="Subscribe mode: the server reports a value only when it moved "
        "more than this since the last report (a DataChangeFilter); tags may override it")
    server_deadband_type: DeadbandType = Field(
        "absolute", description="absolute: in the value's unit; percent: of the node's "
        "EURange (the server needs an EURange property on the node). A deadband the server "
        "refuses is dropped for that tag with a warning when it is the device's; a tag's own "
        "makes the tag read bad with the server's status")
    max_buffered: int = Field(100_000, ge=1, description="Subscribe mode: notifications kept "
                              "between two reads; past it the oldest are dropped and counted "
                              "in gateway_opcua_buffer_dropped_total")
    tags: list[OpcUaTag] = Field(min_length=1, description="Nodes to read")

    def declared_tags(self) -> list[OpcUaTag]:
        return self.tags

    def tag_types(self) -> dict[str, str]:
        return {tag.name: "" for tag in self.tags}  # the node's DataType is read at connect

    @model_validator(mode="after")
    def _server_deadband_needs_subscribe(self) -> OpcUaDeviceConfig:
        if self.mode == "poll" and (self.server_deadband is not None
                                    or any(t.server_deadband is not None for t in self.tags)):
            raise ValueError("server_deadband applies to mode: subscribe (a Read returns every "
                             "value); in poll mode use the gateway-side deadband")
        return self
