"""Fixtures that start real services live in the plugin modules below (one per service)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# These machines are shared and noisy: a property test must fail on a counterexample, never on
# the time one example took (hypothesis' default 200 ms deadline failed under load).
settings.register_profile("shared-box", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
# CI tries the same examples every run (seeded by each test's own code), so a submission is
# never lost to a counterexample met there first; at a desk every run explores new ones.
settings.register_profile("ci", parent=settings.get_profile("shared-box"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "shared-box")

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = [
    "tests.fixtures_mqtt",
    "tests.fixtures_influx",
    "tests.fixtures_modbus",
    "tests.fixtures_opcua",
]


@pytest.fixture(scope="session")
def hoststats_plugin() -> None:
    """The example plugin, installed the way an integrator's package would be."""
    probe = [sys.executable, "-c", "import gateway_hoststats"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e",
                        str(ROOT / "examples" / "gateway-hoststats")], check=True)
