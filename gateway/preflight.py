"""Checks of the machine a valid config will run on, shared by `gateway check` and `run`.

`run` calls these before it opens or connects anything, so that a port in use or a missing
certificate is one line naming the option to change, and never a traceback after the gateway
has already connected to the broker (and, with the same client id, pushed a running gateway
off it). Nothing here changes anything: a probe file is created and removed at once.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath

from drivers.base import Driver
from drivers.registry import load_driver
from gateway.config import GatewayConfig, MqttSinkConfig, line_of, split_listen
from gateway.errors import ConfigProblem
from gateway.sinks.sparkplug.config import SparkplugSinkConfig

Lines = Mapping[tuple[str | int, ...], int]


@dataclass
class Preflight:
    """`errors` stop `check` and `run`; `busy_ports` stop `run` only: at `check` time the
    port may be held by the running gateway the file is checked for."""

    errors: list[ConfigProblem]
    busy_ports: list[ConfigProblem]


def preflight(config: GatewayConfig, lines: Lines | None = None) -> Preflight:
    lines = {} if lines is None else lines
    errors: list[ConfigProblem] = []
    busy: list[ConfigProblem] = []

    def report(path: tuple[str, ...], message: str | None, into: list[ConfigProblem]) -> None:
        if message is not None:
            into.append(ConfigProblem(".".join(path), message, line_of(path, lines)))

    buffer = config.gateway.buffer
    report(("gateway", "buffer", "path"), buffer_path_problem(buffer.path), errors)
    for name, sink in config.sinks.items():
        if isinstance(sink, MqttSinkConfig | SparkplugSinkConfig) and sink.url.startswith(
                "mqtts://"):
            report(("sinks", name, "ca"), ca_file_problem(sink.ca), errors)
            report(("sinks", name, "cert"), client_cert_problem(sink.cert, sink.key), errors)
    http = config.gateway.http
    if http.enabled:
        host, port = split_listen(http.listen)
        problem = port_problem(host, port, "gateway.http.listen",
                               "(or gateway.http.enabled: false)")
        report(("gateway", "http", "listen"), problem,
               busy if problem and "in use" in problem else errors)
    return Preflight(errors, busy)


def build_drivers_checked(config: GatewayConfig, lines: Lines | None = None
                          ) -> tuple[list[Driver], list[ConfigProblem]]:
    """The enabled devices' drivers, built as `run` builds them (a Modbus driver plans its
    reads); a device its driver refuses is a problem at its key path. Disabled devices are
    built too, so that enabling one later cannot fail."""
    drivers: list[Driver] = []
    problems: list[ConfigProblem] = []
    for index, device in enumerate(config.devices):
        try:
            driver = load_driver(device.driver)(device)
        except Exception as exc:  # a plugin's own error, named in one line
            problems.append(ConfigProblem(
                f"devices[{index}]", f"the {device.driver} driver refuses this device: {exc}",
                line_of(("devices", index), lines or {})))
            continue
        if device.enabled:
            drivers.append(driver)
    return drivers, problems


def buffer_path_problem(path: str) -> str | None:
    """Why the buffer's SQLite file could not be opened for writing, if it could not."""
    target = FilePath(path)
    if target.is_dir():
        return f"{path} is a directory: give the buffer's file, e.g. {target / 'buffer.db'}"
    if target.exists():
        try:
            with open(target, "r+b"):
                return None
        except OSError as exc:
            return f"{path} cannot be written: {exc.strerror} (check its owner and mode)"
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the gateway creates the missing folders
    if not folder.is_dir():
        return f"{folder} is a file, so {path} cannot be created under it"
    return _creatable_in(folder, path)


def _creatable_in(folder: FilePath, path: str) -> str | None:
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".gateway-check-")
    except OSError as exc:
        return (f"{path} cannot be created: {exc.strerror} in {folder} (check its owner and "
                "mode, or choose another gateway.buffer.path)")
    os.close(handle)
    os.unlink(probe)
    return None


def ca_file_problem(ca: str | None) -> str | None:
    """Why the CA file cannot verify a broker (missing, unreadable, not PEM)."""
    if ca is None:
        return None  # the system's CA store
    if not os.path.isfile(ca):
        return f"CA file {ca} not found"
    try:
        ssl.create_default_context().load_verify_locations(cafile=ca)
    except ssl.SSLError:
        return f"{ca} is not a PEM CA certificate (a file with -----BEGIN CERTIFICATE-----)"
    except OSError as exc:
        return f"CA file {ca} cannot be read: {exc.strerror}"
    return None


def client_cert_problem(cert: str | None, key: str | None) -> str | None:
    """Why the client certificate and key cannot be loaded (as paho's tls_set would)."""
    if cert is None:
        return "key is given without cert" if key is not None else None
    for role, path in (("certificate", cert), ("key", key)):
        if path is not None and not os.path.isfile(path):
            return f"client {role} file {path} not found"
    try:
        ssl.create_default_context().load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError:
        return (f"{cert} and its key cannot be loaded: both must be PEM, the key not "
                "encrypted, and the key must belong to the certificate")
    except OSError as exc:
        return f"client certificate {cert} cannot be read: {exc.strerror}"
    return None


def _no_password() -> bytes:
    # An encrypted key fails here instead of OpenSSL asking for a passphrase on the terminal.
    return b""


def port_problem(host: str, port: int, option: str, alternative: str = "") -> str | None:
    """Why a server could not listen on host:port, naming the option that moves it."""
    if port == 0:
        return None
    moved = f"set {option} to another port, e.g. {host}:{port + 1 if port < 65535 else port - 1}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return (f"{host} is not an address or a name of this machine: set {option} to one, "
                f"e.g. 127.0.0.1:{port}")
    for family, kind, proto, _, address in addresses:
        failure = _bind_failure(family, kind, proto, address)
        if failure == errno.EADDRINUSE:
            return (f"port {port} is already in use by another program: {moved} "
                    f"{alternative}".rstrip())
        if failure == errno.EACCES:
            return f"port {port} needs root (ports below 1024): {moved}"
        if failure is not None:
            return f"cannot listen on {host}:{port} ({os.strerror(failure)}): {moved}"
    return None


def _bind_failure(family: int, kind: int, proto: int, address: tuple[object, ...]) -> int | None:
    # As asyncio.start_server binds: SO_REUSEADDR (a port in TIME_WAIT is free), v6 only.
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno or -1
    return None
