"""A hostile Modbus TCP server (plain asyncio, no pymodbus): it answers each request the way
`mode` says, right or wrong, so tests can hold the driver's answer checks against real bytes on
a real socket. It serves registers 0..255 of every table (holding and input share one array).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

MODES = ("ok", "fc4_for_fc3", "wrong_unit", "wrong_tid", "short_byte_count", "too_many",
         "byte_count_lies", "garbage", "unknown_function", "http", "bad_echo")


class HostileModbusServer:
    """`async with HostileModbusServer() as server:` then `server.port`; set `server.mode`."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.registers = [0] * 256
        self.coils = [False] * 256
        self.port = 0
        self.requests = 0
        self.functions: list[int] = []  # the function code of every request, in order
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> HostileModbusServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                self.functions.append(pdu[0])
                writer.write(self.answer(tid, unit, pdu))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError):
                writer.close()

    def answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        """The bytes sent back for one request, right or wrong per `mode`."""
        mode = self.mode
        if mode == "garbage":
            return bytes(range(0x90, 0xA8))
        if mode == "http":
            return b"HTTP/1.1 400 Bad Request\r\n\r\n"
        body = self._body(pdu)
        if mode == "fc4_for_fc3" and body[0] == 3:
            body = b"\x04" + body[1:]
        elif mode == "short_byte_count" and body[0] in (3, 4):
            body = bytes([body[0], body[1] - 2]) + body[2:-2]
        elif mode == "too_many" and body[0] in (3, 4):
            body = bytes([body[0], body[1] + 2]) + body[2:] + b"\x00\x07"
        elif mode == "byte_count_lies" and body[0] in (3, 4):
            body = bytes([body[0], 250]) + body[2:]
        elif mode == "unknown_function":
            body = b"\x41\x00\x00"
        elif mode == "bad_echo" and body[0] in (5, 6, 16):
            body = body[:1] + struct.pack(">H", (struct.unpack(">H", body[1:3])[0] + 1)) + \
                body[3:]
        if mode == "wrong_unit":
            unit = (unit + 6) % 256
        if mode == "wrong_tid":
            tid = (tid + 100) % 65536
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body

    def _body(self, pdu: bytes) -> bytes:
        """The correct answer to one request (function 1, 3, 4, 5, 6 or 16)."""
        function = pdu[0]
        address, field = struct.unpack(">HH", pdu[1:5])
        if function in (3, 4):
            values = self.registers[address:address + field]
            return bytes([function, 2 * field]) + b"".join(struct.pack(">H", v) for v in values)
        if function == 1:
            bits = self.coils[address:address + field]
            data = bytes(sum(1 << i for i, bit in enumerate(bits[k:k + 8]) if bit)
                         for k in range(0, field, 8))
            return bytes([function, len(data)]) + data
        if function == 5:
            self.coils[address] = field == 0xFF00
            return pdu[:5]
        if function == 6:
            self.registers[address] = field
            return pdu[:5]
        if function == 16:
            self.registers[address:address + field] = [
                struct.unpack(">H", pdu[6 + 2 * i:8 + 2 * i])[0] for i in range(field)]
            return pdu[:5]
        return bytes([function | 0x80, 1])
