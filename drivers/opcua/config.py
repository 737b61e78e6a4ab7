"""The OPC UA device config: endpoint, security, mode and tags."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from drivers.base import DeviceConfig
from gateway.units import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpcUaConnection(_Strict):
    endpoint: str = Field(description="opc.tcp://host:port/path")
    security: str = Field("None", description="None | Basic256Sha256 | Aes128_Sha256_RsaOaep "
                          "| Aes256_Sha256_RsaPss")
    mode: Literal["Sign", "SignAndEncrypt"] = Field("SignAndEncrypt",
                                                   description="Message security mode")
    username: str = Field("", description="Empty means anonymous")
    password: SecretStr = Field(SecretStr(""), description="Password of username")
    timeout: Duration = Field(4.0, gt=0, description="Connect and request timeout")

    @field_validator("security")
    @classmethod
    def _policy(cls, value: str) -> str:
        if value == "Basic128Rsa15":
            raise ValueError("Basic128Rsa15 is deprecated and insecure: use Basic256Sha256")
        if value not in ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep",
                         "Aes256_Sha256_RsaPss"):
            raise ValueError(f"unknown security policy {value!r}")
        return value


class OpcUaTag(_Strict):
    name: str = Field(min_length=1, pattern=r"^[^/#+\s]+$", description="Tag name")
    node: str = Field(min_length=1, description='Node id, e.g. "ns=2;s=Spindle.Speed"')
    unit: str | None = Field(None, description="Engineering unit")
    deadband: float | None = Field(None, ge=0, description="Gateway-side deadband")


class OpcUaDeviceConfig(DeviceConfig):
    driver: Literal["opcua"] = Field(description="opcua")
    mode: Literal["subscribe", "poll"] = Field("poll", description="subscribe or poll")
    connection: OpcUaConnection
    sampling_interval: Duration = Field(0.0, ge=0, description="Server sampling interval")
    queue_size: int = Field(10, ge=1, description="Server-side queue per monitored item")
    tags: list[OpcUaTag] = Field(min_length=1, description="Nodes to read")
