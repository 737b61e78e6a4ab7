"""A loopback TCP proxy that can go silent: the sockets stay open but nothing is forwarded,
as when a PLC hangs or a cable is pulled (a half-open connection no RST ever reports). It can
also hold the server's replies back, as a slow network delays an answer, and pass them on later."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class SilentableProxy:
    """`async with SilentableProxy(target_port) as proxy: proxy.port; proxy.silent = True`."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.silent = False
        self.forwarded_to_server = 0  # bytes
        self._replies = asyncio.Event()  # cleared: the server's bytes wait
        self._replies.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentableProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def drop_all(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, to_server=True),
                             self._pipe(up_reader, writer, to_server=False))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    to_server: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if not to_server:
                    await self._replies.wait()
                if not self.silent:
                    writer.write(data)
                    await writer.drain()
                    if to_server:
                        self.forwarded_to_server += len(data)
        writer.close()
