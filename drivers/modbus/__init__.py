"""Modbus TCP and RTU driver: `driver: modbus`."""

from drivers.modbus.driver import ModbusDriver

__all__ = ["ModbusDriver"]
