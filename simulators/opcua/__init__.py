"""OPC UA simulator: a CNC machine plus one node of every value type."""

from simulators.opcua.server import OpcUaSimulator

__all__ = ["OpcUaSimulator"]
