"""`gateway status`'s report: sinks, devices from the buffer and the running gateway, and the
note for a sink that never connected."""

import re
from datetime import UTC, datetime

import pytest

from gateway.status_report import DeviceRow, format_status

pytestmark = pytest.mark.unit
SINKS = [{"sink": "influxdb", "depth": 350, "oldest_unsent_age_s": 12.5, "dropped": 0,
          "unconfirmed": 350},
         {"sink": "mqtt", "depth": 0, "oldest_unsent_age_s": 0.0, "dropped": 0,
          "unconfirmed": 0}]
DEVICES = [DeviceRow("press-01", 40, 2, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))]
LIVE = {"sinks": [{"name": "influxdb", "connected": False}, {"name": "mqtt", "connected": True}],
        "devices": [{"name": "press-01", "healthy": True, "error": None},
                    {"name": "cnc-01", "healthy": False, "error": "connection refused"}]}


def test_a_sink_that_never_connected_has_its_unconfirmed_explained() -> None:
    text = "\n".join(format_status("/b.db", SINKS, DEVICES, LIVE, "127.0.0.1:8080"))
    assert "note: influxdb has 350 unconfirmed and is not connected" in text
    assert "note: mqtt" not in text
    assert re.search(r"influxdb +350 +12\.5s +0 +350  NO", text), text


def test_devices_merge_the_buffer_and_the_running_gateway() -> None:
    lines = format_status("/b.db", SINKS, DEVICES, LIVE, "127.0.0.1:8080")
    press = next(line for line in lines if line.startswith("  press-01"))
    cnc = next(line for line in lines if line.startswith("  cnc-01"))
    assert "answering" in press and "40" in press and "2026-01-02 03:04:05" in press
    assert "not answering" in cnc and "connection refused" in cnc


def test_without_a_running_gateway_devices_come_from_the_buffer_and_config() -> None:
    text = "\n".join(format_status("/b.db", SINKS, DEVICES, None, "127.0.0.1:8080",
                                   ["press-01", "oven-02"]))
    assert "not answering (devices below: from the config and the buffer)" in text
    assert "press-01" in text and "oven-02" in text and "cnc-01" not in text
    assert "connected" in text and "  mqtt" in text
