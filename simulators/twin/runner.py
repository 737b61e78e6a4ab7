"""Start the twins of every Modbus and OPC UA device of a config (`gateway simulate`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from drivers.modbus.config import ModbusDeviceConfig
from drivers.opcua.config import OpcUaDeviceConfig
from gateway.config import GatewayConfig
from simulators.twin.layout import TwinLayout, build_layout, modbus_place
from simulators.twin.modbus import ModbusTwin, TwinUnit
from simulators.twin.opcua import OpcUaTwin
from simulators.twin.rewrite import point_at_twins


@dataclass
class Twins:
    """`async with Twins(config, raw) as twins:` serves every twin; `twins.config` is the raw
    config pointed at them. `modbus`/`opcua` are keyed by the place each stands in for."""

    config_model: GatewayConfig
    raw: dict[str, Any]
    host: str = "127.0.0.1"
    layout: TwinLayout = field(init=False)
    modbus: dict[str, ModbusTwin] = field(default_factory=dict)
    opcua: dict[str, OpcUaTwin] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def __post_init__(self) -> None:
        self.layout = build_layout(self.config_model)

    async def __aenter__(self) -> Twins:
        try:
            for place, plan in self.layout.modbus.items():
                twin = ModbusTwin(plan, host=self.host)
                self.modbus[place] = await self._stack.enter_async_context(twin)
            for endpoint, opc_plan in self.layout.opcua.items():
                opc = OpcUaTwin(opc_plan, host=self.host)
                self.opcua[endpoint] = await self._stack.enter_async_context(opc)
        except BaseException:
            await self._stack.aclose()
            raise
        self.config = point_at_twins(self.raw, self._modbus_targets(), self._opcua_targets())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _modbus_targets(self) -> dict[str, tuple[str, int]]:
        return {d.name: (self.host, self.modbus[modbus_place(d)].port)
                for d in self.config_model.devices if isinstance(d, ModbusDeviceConfig)
                and modbus_place(d) in self.modbus}

    def _opcua_targets(self) -> dict[str, str]:
        return {d.name: self.opcua[d.connection.endpoint].endpoint
                for d in self.config_model.devices if isinstance(d, OpcUaDeviceConfig)
                and d.connection.endpoint in self.opcua}

    def modbus_unit(self, device: str) -> TwinUnit:
        for twin in self.modbus.values():
            for unit in twin.twins.values():
                if unit.plan.device == device:
                    return unit
        raise KeyError(device)

    def opcua_of(self, device: str) -> OpcUaTwin:
        return next(t for t in self.opcua.values() if device in t.plan.devices)

    def value_of(self, device: str, tag: str) -> Any:
        with contextlib.suppress(KeyError):
            return self.modbus_unit(device).value_of(tag)
        return self.opcua_of(device).value_of(device, tag)

    def freeze(self, on: bool = True) -> None:
        for twin in self.modbus.values():
            twin.freeze(on)
        for opc in self.opcua.values():
            opc.freeze(on)

    def describe(self) -> list[str]:
        lines = [f"modbus twin {t.host}:{t.port} for {place}: units "
                 + ", ".join(f"{u} ({p.device}, {len(p.tags)} tags)"
                             for u, p in t.plan.units.items())
                 for place, t in self.modbus.items()]
        lines += [f"opcua twin {t.endpoint} for {endpoint}: {len(t.plan.nodes)} nodes "
                  f"({', '.join(t.plan.devices)})" for endpoint, t in self.opcua.items()]
        return lines + [f"no twin: {reason}" for reason in self.layout.skipped]
