"""Twins of a gateway config's devices: Modbus and OPC UA servers laid out from its tags
(`gateway simulate`, `gateway drill`)."""

from simulators.twin.layout import TwinLayout, build_layout
from simulators.twin.runner import Twins

__all__ = ["TwinLayout", "Twins", "build_layout"]
