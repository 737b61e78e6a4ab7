"""One exception family; each carries what it is about (device, tag, key path)."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration is invalid. `problems` lists every problem, each with path and line."""

    def __init__(self, problems: list[ConfigProblem], source: str = "<config>") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} error(s)"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class ConfigProblem:
    """One config problem: dotted key path, line number (1-based, if known) and message."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<root>'}: {self.message}"

    def __repr__(self) -> str:
        return f"ConfigProblem({self.path!r}, {self.message!r}, line={self.line})"


class DriverError(GatewayError):
    """A device could not be read; the affected tags become bad-quality readings."""

    def __init__(self, message: str, device: str = "", tag: str | None = None) -> None:
        self.device = device
        self.tag = tag
        super().__init__(message)


class DeviceUnreachable(DriverError):
    """The device does not answer or the connection dropped: reconnect with backoff."""


class DecodeError(DriverError):
    """Registers or a protocol answer could not be turned into a value."""


class WriteRefused(GatewayError):
    """A write was refused, by the gateway (not writable, wrong type, outside min/max, does not
    fit the type) or by the device (an exception answer); nothing was written."""


class SinkError(GatewayError):
    """A sink could not deliver a batch; it is retried from the buffer."""

    def __init__(self, message: str, sink: str = "") -> None:
        self.sink = sink
        super().__init__(message)


class BufferError(GatewayError):  # shadows the builtin on purpose: gateway.errors.BufferError
    """The durable buffer's file cannot be used at all (a directory at its path, a read-only
    place): the message says what to do. A damaged file is not one: it is moved aside."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)
