"""Simulated Modbus machines (a stamping press, an injection moulding machine, a packaging
line) behind a real pymodbus server."""

from simulators.modbus.machines import Machine, load_machines, register_map
from simulators.modbus.server import ModbusSimulator

__all__ = ["Machine", "ModbusSimulator", "load_machines", "register_map"]
