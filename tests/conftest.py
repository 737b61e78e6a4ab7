"""Fixtures that start real services live in the plugin modules below (one per service)."""

pytest_plugins = [
    "tests.fixtures_mqtt",
    "tests.fixtures_influx",
    "tests.fixtures_modbus",
]
