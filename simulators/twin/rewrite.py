"""The config to point a gateway at the twins (pure): the same file with each Modbus device's
host/port (or serial line) and each OPC UA device's endpoint replaced by its twin's."""

from __future__ import annotations

import copy
from typing import Any

SERIAL_KEYS = ("serial", "baudrate", "parity", "stopbits", "bytesize")
SECURITY_KEYS = ("mode", "certificate", "private_key", "server_certificate",
                 "server_fingerprint", "trust", "username", "password", "user_certificate",
                 "user_private_key")


def point_at_twins(raw: dict[str, Any], modbus: dict[str, tuple[str, int]],
                   opcua: dict[str, str]) -> dict[str, Any]:
    """`raw` (the file's mapping) with devices redirected: `modbus` maps a device name to its
    twin's (host, port), `opcua` a device name to its twin's endpoint. A serial device becomes
    TCP (same unit id); an OPC UA twin has no security, so security keys are dropped."""
    data = copy.deepcopy(raw)
    for device in data.get("devices") or []:
        if not isinstance(device, dict):
            continue
        name = device.get("name")
        connection = device.setdefault("connection", {})
        if name in modbus:
            for key in SERIAL_KEYS:
                connection.pop(key, None)
            connection["host"], connection["port"] = modbus[name]
        elif name in opcua:
            for key in SECURITY_KEYS:
                connection.pop(key, None)
            connection["endpoint"] = opcua[name]
            connection["security"] = "None"
    return data
