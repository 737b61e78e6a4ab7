"""An asyncua server that models a CNC machine, with fault switches for tests
(restart, remove_node, freeze, drop_sessions)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from types import TracebackType

from asyncua import Node, Server, ua

from simulators.opcua import address_space
from simulators.opcua.address_space import NS_URI, TYPED
from simulators.opcua.machines import Cnc
from simulators.opcua.security import SimulatorSecurity
from simulators.ports import free_port

__all__ = ["NS_URI", "TYPED", "OpcUaSimulator", "free_port"]  # tests import them from here


class OpcUaSimulator:
    """`async with OpcUaSimulator(port=0) as sim: sim.endpoint`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 tick: float = 0.1, security: SimulatorSecurity | None = None) -> None:
        self.host = host
        self.security = security
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://{host}:{self.port}/"
        self.tick = tick
        self.machine = Cnc(seed)
        self.frozen = False
        self.written: list[str] = []
        """The node id of every client Write (refused or not), in order, since the start."""
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OpcUaSimulator:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self.security.apply(server)
        idx = await server.register_namespace(NS_URI)
        self._nodes = await address_space.build(server, idx)
        self._record_writes(server)
        await server.start()
        self._server = server
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def remove_node(self, name: str) -> None:
        assert self._server is not None
        node = self._nodes.pop(name)
        await self._server.delete_nodes([node])

    async def set_operation_limits(self, max_nodes_per_read: int,
                                   max_monitored_items_per_call: int) -> None:
        """Announce OperationLimits (0 = none) and act on them as a real PLC does: asyncua
        2.1 announces 10000 but enforces nothing, so a larger Read is refused here with
        BadTooManyOperations. `read_sizes` and `monitored_item_calls` record the size of
        every external Read and CreateMonitoredItems call from now on (until a restart)."""
        from asyncua.common.callback import CallbackType, ServerItemCallback

        assert self._server is not None
        limits = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
        items = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
        for node_id, value in ((limits, max_nodes_per_read), (items, max_monitored_items_per_call)):
            await self._server.get_node(ua.NodeId(ua.Int32(node_id))).write_value(
                ua.Variant(value, ua.VariantType.UInt32))
        self.read_sizes: list[int] = []
        self.monitored_item_calls: list[int] = []

        def on_read(event: ServerItemCallback, _: object) -> None:
            if event.is_external:
                self.read_sizes.append(len(event.request_params.NodesToRead))
                if 0 < max_nodes_per_read < self.read_sizes[-1]:
                    raise ua.uaerrors.BadTooManyOperations()

        def on_items(event: ServerItemCallback, _: object) -> None:
            if event.is_external:
                self.monitored_item_calls.append(len(event.request_params.ItemsToCreate))

        # One listener per callback type: asyncua keys listeners by priority (0 here).
        self._server.subscribe_server_callback(CallbackType.PreRead, on_read)
        self._server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, on_items)

    def freeze(self, on: bool) -> None:
        self.frozen = on

    def drop_sessions(self) -> int:
        """Close every client connection (and so its session) while the server keeps running,
        as a PLC does when its session table is reset; the number of connections closed."""
        assert self._server is not None
        transports = list(self._server.iserver.asyncio_transports)
        for transport in transports:
            transport.close()
        return len(transports)

    async def _run(self) -> None:
        while True:
            if not self.frozen:
                await self._update()
            await asyncio.sleep(self.tick)

    async def _update(self) -> None:
        await self._follow_setpoints()
        self.machine.step()
        now = datetime.now(UTC)
        for name, value in address_space.cnc_values(self.machine).items():
            node = self._nodes.get(name)
            if node is not None:
                vtype = address_space.VARIANT_TYPES[name]
                await node.write_value(ua.DataValue(ua.Variant(value, vtype),
                                                    # asyncua types it as ua.DateTime
                                                    SourceTimestamp=now,  # type: ignore[arg-type]
                                                    ServerTimestamp=now))  # type: ignore[arg-type]


    def _record_writes(self, server: Server) -> None:
        from asyncua.common.callback import CallbackType, ServerItemCallback

        self.written = []

        def on_write(event: ServerItemCallback, _: object) -> None:
            if event.is_external:
                self.written += [w.NodeId.to_string() for w in event.request_params.NodesToWrite]

        server.subscribe_server_callback(CallbackType.PreWrite, on_write)

    async def _follow_setpoints(self) -> None:
        """The machine takes what clients wrote to the setpoint nodes."""
        speed = self._nodes.get("Cnc.Setpoints.SpindleSpeed")
        override = self._nodes.get("Cnc.Setpoints.SpindleOverride")
        if speed is not None:
            self.machine.spindle_setpoint = float(await speed.read_value())
        if override is not None:
            self.machine.spindle_override = int(await override.read_value())


def main(port: int = 4840) -> None:
    """Run forever (python -m simulators.opcua.server)."""
    logging.basicConfig(level=logging.WARNING)

    async def forever() -> None:
        async with OpcUaSimulator(port=port) as sim:
            print(f"OPC UA simulator on {sim.endpoint}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(forever())


if __name__ == "__main__":
    main()
