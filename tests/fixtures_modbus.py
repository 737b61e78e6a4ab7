"""The Modbus simulator over real sockets (TCP) or a pty pair (RTU)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from simulators.modbus import ModbusSimulator
from tests.procs import wait_for


@pytest.fixture
async def modbus_simulator() -> AsyncIterator[ModbusSimulator]:
    """All simulated machines on a free 127.0.0.1 port, seed 1, models frozen at t=0 (tests
    that want motion call `freeze(False)`)."""
    simulator = ModbusSimulator(port=0, seed=1)
    simulator.freeze(True)
    async with simulator:
        yield simulator


@pytest.fixture
def rtu_pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo-terminals (a null-modem cable), made by socat."""
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: a.exists() and b.exists(), 10, "socat's pty pair")
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(5)
