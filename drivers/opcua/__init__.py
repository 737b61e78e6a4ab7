"""OPC UA driver (asyncua): poll or subscribe."""

from drivers.opcua.driver import OpcUaDriver

__all__ = ["OpcUaDriver"]
