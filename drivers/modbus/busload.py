"""What a shared Modbus line carries (pure): the wire time of each device's poll, from the
baud rate, the request and answer sizes and `link_delay`, against the poll intervals.

Modbus RTU sends each byte as a character of start bit, data bits, parity bit (unless N) and
stop bits; a frame ends with 3.5 characters of silence (1.75 ms above 19,200 baud, as the spec
fixes it). A read request is 8 bytes (unit, function, address, count, CRC); its answer 5 bytes
plus the data (2 per register, 1 per 8 bits). The estimate is the wire's minimum: each device's
own reply latency (often 5-50 ms) comes on top, which no config knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.modbus.config import ModbusDeviceConfig
from drivers.modbus.planner import BIT_TABLES, TagSpan, plan_reads

READ_REQUEST_BYTES = 8
ANSWER_OVERHEAD_BYTES = 5


def char_bits(bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits on the wire per byte: start + data + parity + stop."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def answer_bytes(table: str, count: int) -> int:
    data = (count + 7) // 8 if table in BIT_TABLES else 2 * count
    return ANSWER_OVERHEAD_BYTES + data


def frame_gap(baudrate: int, bits: int) -> float:
    """The silence that ends an RTU frame: 3.5 characters, 1.75 ms above 19,200 baud."""
    return 0.00175 if baudrate > 19200 else 3.5 * bits / baudrate


def exchange_seconds(table: str, count: int, baudrate: int, bits: int = 10,
                     link_delay: float = 0.0) -> float:
    """Wire time of one read and its answer, with both frame gaps and the link's delay."""
    on_wire = (READ_REQUEST_BYTES + answer_bytes(table, count)) * bits / baudrate
    return on_wire + 2 * frame_gap(baudrate, bits) + link_delay


@dataclass(frozen=True)
class DeviceLoad:
    name: str
    interval: float
    requests: int
    seconds: float  # wire time of one poll

    @property
    def share(self) -> float:
        return self.seconds / self.interval


@dataclass(frozen=True)
class BusLoad:
    """One serial line and the devices polled over it."""

    where: str
    devices: tuple[DeviceLoad, ...]

    @property
    def cycle_seconds(self) -> float:
        """Wire time of one poll of every device."""
        return sum(d.seconds for d in self.devices)

    @property
    def load(self) -> float:
        """Fraction of the line's time the polls need (over 1: they cannot all keep time)."""
        return sum(d.share for d in self.devices)

    def describe(self) -> list[str]:
        verdict = ("  OVER 100%: the devices cannot all be polled at their intervals"
                   if self.load > 1 else "")
        lines = [f"bus {self.where}: {len(self.devices)} device(s), "
                 f"{self.cycle_seconds * 1000:.1f} ms per cycle of all their requests, "
                 f"load {self.load:.0%} of the line{verdict}"]
        lines += [f"  {d.name}: {d.requests} request(s), {d.seconds * 1000:.1f} ms per poll "
                  f"every {d.interval:g}s ({d.share:.1%})" for d in self.devices]
        return lines


def device_load(device: ModbusDeviceConfig) -> DeviceLoad:
    conn = device.connection
    plan = plan_reads((TagSpan(t.name, t.table, t.address, t.size) for t in device.tags),
                      max_gap=device.max_gap, max_registers=device.max_registers_per_read,
                      max_bits=device.max_bits_per_read)
    bits = char_bits(conn.bytesize, conn.parity, conn.stopbits)
    seconds = sum(exchange_seconds(r.table, r.count, conn.baudrate, bits, conn.link_delay)
                  for r in plan.requests)
    return DeviceLoad(device.name, device.poll_interval, len(plan.requests), seconds)


def bus_loads(devices: Iterable[Any]) -> list[BusLoad]:
    """The load of every serial line the enabled Modbus devices poll, in config order."""
    buses: dict[str, list[ModbusDeviceConfig]] = {}
    for device in devices:
        if isinstance(device, ModbusDeviceConfig) and device.enabled \
                and device.connection.serial is not None:
            buses.setdefault(device.connection.serial, []).append(device)
    loads = []
    for serial, members in buses.items():
        conn = members[0].connection
        where = (f"{serial} ({conn.baudrate} {conn.bytesize}{conn.parity}{conn.stopbits}"
                 f", link_delay {conn.link_delay * 1000:g}ms)")
        loads.append(BusLoad(where, tuple(device_load(d) for d in members)))
    return loads


def shared_tcp_links(devices: Iterable[Any]) -> list[str]:
    """One line per TCP host:port that several devices share (one connection)."""
    shared: dict[tuple[str, ...], list[str]] = {}
    for device in devices:
        if isinstance(device, ModbusDeviceConfig) and device.enabled \
                and device.connection.host is not None:
            shared.setdefault(device.connection.link_key(), []).append(device.name)
    return [f"link {key[1]}:{key[2]} ({key[3]}): one connection shared by {', '.join(names)}"
            for key, names in shared.items() if len(names) > 1]


def describe_buses(devices: Sequence[Any]) -> list[str]:
    """What `gateway check --plan` prints after the devices' plans."""
    lines = [line for bus in bus_loads(devices) for line in bus.describe()]
    return lines + shared_tcp_links(devices)


def capacity_table(baudrates: Sequence[int] = (9600, 115200)) -> str:
    """The docs' table of what a line carries (8N1, no link_delay): drivers/modbus/README.md."""
    rows = ["| baud | one read of 10 registers | one read of 125 registers | reads of 10 "
            "registers per second | meters (2 reads of 10 registers each) per 1 s cycle |",
            "|---|---|---|---|---|"]
    for baud in baudrates:
        ten, full = exchange_seconds("holding", 10, baud), exchange_seconds("holding", 125, baud)
        rows.append(f"| {baud:,} | {ten * 1000:.1f} ms | {full * 1000:.1f} ms | "
                    f"{int(1 / ten)} | {int(1 / (2 * ten))} |")
    return "\n".join(rows)
