"""Shared Modbus links: every device that names the same serial port, or the same host:port
(and framer), talks through one `ModbusLink` (a hub like Home Assistant's ModbusHub): one
pymodbus client, one request at a time across the unit ids on it, `link_delay` of silence
before each request.

Fairness: each request takes the link's lock on its own, and asyncio.Lock serves its waiters
first come, first served, so devices interleave request by request (FIFO per link): a slow
unit costs the others at most one of its timeouts per request, never a whole poll.

One unit's timeout fails only that unit's request: pymodbus's own "close the connection after
retries + 3 timeouts in a row" is switched off, and the link closes itself only when it looks
dead (several timeouts in a row, from every unit on it, with no answer in between). The
registry counts the devices on each link (a reload that removes one keeps it for the others)
and closes a link when its last device leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.modbus.answers import AnswerProblem, Expected
from drivers.modbus.config import ModbusConnection
from drivers.modbus.framing import CheckedRtuFramer, CheckedSocketFramer
from drivers.modbus.serialwrite import write_at_once
from gateway.errors import DeviceUnreachable

log = logging.getLogger(__name__)

LinkKey = tuple[str, ...]
DEAD_AFTER = 3  # timeouts in a row, covering every unit on the link: the link itself is dead
_NEVER = 10**9  # pymodbus's count of timeouts before it closes the connection: never


class BadAnswer(Exception):
    """An answer that does not answer its request (becomes bad readings, or the reason a
    write failed)."""

    def __init__(self, problem: AnswerProblem) -> None:
        self.problem = problem
        super().__init__(problem.reason)


class _Watch:
    """One connection's view of the request in flight. pymodbus 3.16 does not fail a pending
    request when the peer closes the connection (measured: the request waits out its full
    timeout), so its connect/disconnect callback cancels the request in flight instead; the
    checked framer (framing.py) does the same for an answer that is wrong. One `_Watch` per
    client, so a late callback from a closed client cannot touch the next connection.

    Cancelling is done on the future pymodbus awaits the answer on (its transaction manager's
    `response_future`), so the request runs in the calling task: no task per request, and two
    event-loop turns fewer per exchange than awaiting it as a task of its own (bus bench)."""

    def __init__(self) -> None:
        self.lost = False
        self.asking = False  # a request of ours is in flight
        self.ctx: Any = None  # the client's transaction manager, once the client is made
        self.expected: Expected | None = None
        self.failure: AnswerProblem | None = None
        self.skipped: str | None = None

    def changed(self, connected: bool) -> None:
        if not connected:
            self.lost = True
            self._cancel()

    def fail(self, problem: AnswerProblem) -> None:
        if self.failure is None:
            self.failure = problem
        self._cancel()

    def skip(self, what: str) -> None:
        self.skipped = what

    def start(self, expected: Expected) -> None:
        self.expected, self.failure, self.skipped = expected, None, None

    def _cancel(self) -> None:
        future = getattr(self.ctx, "response_future", None) if self.asking else None
        if future is not None and not future.done():
            future.cancel()


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusLink:
    """One connection (TCP socket or serial port) and the devices that share it."""

    def __init__(self, key: LinkKey, connection: ModbusConnection,
                 dead_after: int | None = DEAD_AFTER) -> None:
        self.key = key
        self.dead_after = dead_after  # None: never closed for silence (probe asks absent units)
        self.connection = connection  # the first device's: the link settings all agree on
        self.users: dict[str, int] = {}  # device name -> its unit id
        self.lock = asyncio.Lock()
        self.client: Client | None = None
        self.watch = _Watch()
        self.connects = 0  # connections opened (for tests and logs)
        self._last_end = 0.0
        self._silent: set[int] = set()  # units that timed out since the last answer
        self._timeouts = 0  # timeouts in a row since the last answer
        self._queued = 0  # requests waiting for the lock

    @property
    def where(self) -> str:
        conn = self.connection
        if conn.serial is not None:
            return conn.serial
        return f"{conn.host}:{conn.port}" + (" (rtu)" if conn.framing == "rtu" else "")

    @property
    def up(self) -> bool:
        return self.client is not None and self.client.connected and not self.watch.lost

    async def connect(self, device: str) -> None:
        """Open the link unless it is up (another device opened it). Raises DeviceUnreachable."""
        async with self.lock:
            if self.up:
                return
            self.close()
            self.watch = _Watch()
            self.client = client = self._client(self.watch)
            try:
                connected = await client.connect()
            except (OSError, ModbusException) as exc:
                raise DeviceUnreachable(f"cannot connect to {self.where}: {exc}", device) from exc
            if not connected:
                raise DeviceUnreachable(f"cannot connect to {self.where}", device)
            self.connects += 1
            write_at_once(client.ctx.transport)
            self._silent.clear()
            self._timeouts = 0
            if len(self.users) > 1:
                log.info("link %s: connected, shared by %s", self.where, ", ".join(self.users))

    def _client(self, watch: _Watch) -> Client:
        conn = self.connection
        # pymodbus must neither reconnect nor retry on its own: the runtime reconnects with
        # backoff, and retries would multiply the timeout of a device that is down.
        common: dict[str, Any] = {"timeout": conn.timeout, "retries": 0, "reconnect_delay": 0,
                                  "trace_connect": watch.changed}
        client: Client
        if conn.host is not None:
            framer = FramerType.RTU if conn.framing == "rtu" else FramerType.SOCKET
            client = AsyncModbusTcpClient(conn.host, port=conn.port, framer=framer, **common)
        else:
            assert conn.serial is not None
            client = AsyncModbusSerialClient(
                conn.serial, baudrate=conn.baudrate, parity=conn.parity, stopbits=conn.stopbits,
                bytesize=conn.bytesize, **common)
        checked = CheckedRtuFramer if conn.framing == "rtu" else CheckedSocketFramer
        client.ctx.framer = checked(client.ctx.framer.decoder, watch)
        client.ctx.max_until_disconnect = client.ctx.count_until_disconnect = _NEVER
        watch.ctx = client.ctx
        return client

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # close never raises
                log.debug("link %s: error while closing: %s", self.where, exc)

    async def call(self, device: str, unit_id: int, timeout: float, expected: Expected,
                   method: str, *args: Any, **kwargs: Any) -> ModbusPDU:
        """One request and its answer, checked against it (framing.py), in turn with the other
        devices' requests. Raises DeviceUnreachable (no answer, link lost) or BadAnswer."""
        self._queued += 1
        try:
            await self.lock.acquire()
        finally:
            self._queued -= 1
        try:
            await self._quiet()
            answer = await self._exchange(device, unit_id, timeout, expected, method, *args,
                                          **kwargs)
        finally:
            self._last_end = time.monotonic()
            self.lock.release()
        if self._queued:
            # Let the next device's request go out before this one's answer is decoded: the
            # decoding then overlaps that request's time on the wire instead of delaying it.
            await asyncio.sleep(0)
        return answer

    async def _quiet(self) -> None:
        """Wait out `link_delay` since the end of the last exchange."""
        wait = self._last_end + self.connection.link_delay - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _exchange(self, device: str, unit_id: int, timeout: float, expected: Expected,
                        method: str, *args: Any, **kwargs: Any) -> ModbusPDU:
        client, watch = self.client, self.watch
        if client is None or not self.up:
            raise DeviceUnreachable("not connected", device)
        client.ctx.comm_params.timeout_connect = timeout  # each device's own timeout
        watch.start(expected)
        watch.asking = True
        try:
            answer: ModbusPDU = await getattr(client, method)(*args, device_id=unit_id,
                                                              **kwargs)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            if watch.failure is not None:
                raise BadAnswer(watch.failure) from None
            if watch.lost:
                raise DeviceUnreachable(f"connection to unit {unit_id} lost", device) from None
            raise
        except (ModbusException, OSError) as exc:
            if watch.skipped is not None:
                # Something came back, but not an answer to this request.
                raise BadAnswer(AnswerProblem("mismatch", f"no matching answer: "
                                                          f"{watch.skipped}")) from None
            # pymodbus 3.16 reports a timeout as ModbusIOException and a dropped connection as
            # ConnectionException; OSError covers a socket that fails under it.
            self._timed_out(unit_id)
            raise DeviceUnreachable(f"no answer from unit {unit_id}: {exc}", device) from exc
        finally:
            watch.asking = False
            watch.expected = None
        self._silent.clear()
        self._timeouts = 0
        return answer

    def _timed_out(self, unit_id: int) -> None:
        """Count a timeout; close a link on which no unit answers any more (the devices then
        reconnect it), and only then: a unit that is off must not cut its neighbours off."""
        self._timeouts += 1
        self._silent.add(unit_id)
        if self.dead_after is None or self._timeouts < self.dead_after:
            return
        if self._silent >= set(self.users.values()):
            log.warning("link %s: no unit answers (%s), reconnecting", self.where,
                        ", ".join(str(u) for u in sorted(self._silent)))
            self.watch.lost = True
            self.close()


class LinkRegistry:
    """The open links of one event loop, by key, with the devices using each."""

    def __init__(self) -> None:
        self._links: dict[LinkKey, ModbusLink] = {}

    def acquire(self, device: str, connection: ModbusConnection) -> ModbusLink:
        """The link for `connection`, shared with the devices already on it. Raises
        DeviceUnreachable while the link is open with other settings (a reload that changes
        a bus's baud rate: the old devices leave first)."""
        key = connection.link_key()
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = ModbusLink(key, connection)
        elif link.users and link.connection.link_settings() != connection.link_settings():
            raise DeviceUnreachable(
                f"link {link.where} is open with other settings by {', '.join(link.users)}",
                device)
        link.users[device] = connection.unit_id
        return link

    def release(self, device: str, link: ModbusLink) -> None:
        """`device` leaves the link; the last one closes it."""
        link.users.pop(device, None)
        if not link.users:
            link.close()
            if self._links.get(link.key) is link:
                del self._links[link.key]

    def get(self, key: LinkKey) -> ModbusLink | None:
        return self._links.get(key)

    def __len__(self) -> int:
        return len(self._links)


_REGISTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LinkRegistry] = (
    weakref.WeakKeyDictionary())


def links() -> LinkRegistry:
    """The running event loop's links (a client belongs to the loop it was made in)."""
    loop = asyncio.get_running_loop()
    registry = _REGISTRIES.get(loop)
    if registry is None:
        registry = _REGISTRIES[loop] = LinkRegistry()
    return registry
