"""`python -m simulators` serves the machines and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from pymodbus.client import ModbusTcpClient

from tests.procs import free_port, port_open, wait_for

pytestmark = pytest.mark.integration


def test_simulator_cli_answers_and_exits_zero_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--modbus-port", str(port),
                             "--seed", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(port), 15, "the simulator's port")
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        answer = client.read_holding_registers(20, count=8, device_id=2)
        client.close()
        assert not answer.isError()
        assert bytes(b for r in answer.registers for b in r.to_bytes(2, "big")).startswith(b"PP-")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
