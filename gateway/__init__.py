"""Shopfloor Gateway: PLC values (Modbus, OPC UA) to MQTT and InfluxDB, with nothing lost."""

__version__ = "0.1.0"
