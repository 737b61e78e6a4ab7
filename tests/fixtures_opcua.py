"""An OPC UA simulator on a free 127.0.0.1 port, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from simulators.opcua import OpcUaSimulator


@pytest.fixture
async def opcua_sim() -> AsyncIterator[OpcUaSimulator]:
    async with OpcUaSimulator(seed=1, tick=0.05) as sim:
        yield sim
