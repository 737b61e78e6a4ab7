"""`python -m simulators` serves the machines and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client
from pymodbus.client import ModbusTcpClient

from drivers.opcua.config import OpcUaConnection
from drivers.opcua.session import SecurityRejected, open_client
from tests.procs import free_port, port_open, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


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


def test_simulator_cli_also_serves_the_opcua_cnc_when_given_a_port() -> None:
    modbus_port, opcua_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--modbus-port",
                             str(modbus_port), "--opcua-port", str(opcua_port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(opcua_port) and port_open(modbus_port), 15,
                 "both simulators' ports")
        values = asyncio.run(read_cnc(f"opc.tcp://127.0.0.1:{opcua_port}/"))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert values[0] in ("RUNNING", "IDLE", "ALARM") and values[1] >= 0


async def read_cnc(endpoint: str) -> list[Any]:
    async with Client(endpoint, timeout=3) as client:
        return [await client.get_node(f"ns=2;s=Cnc.{name}").read_value()
                for name in ("State", "PartCounter")]


def test_simulator_cli_serves_a_secured_cnc_the_gateway_can_pin_and_log_into(
        tmp_path: Path) -> None:
    opcua_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--modbus-port", "0",
                             "--opcua-port", str(opcua_port), "--opcua-secure",
                             "--opcua-user", "operator:s3cret",
                             "--opcua-pki", str(tmp_path / "sim-pki")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while not (found := re.search(r"SHA-256 ([0-9a-f]{64})", "".join(lines))):
            assert len(lines) < 10 and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        wait_for(lambda: port_open(opcua_port), 15, "the OPC UA port")
        connection = {"endpoint": f"opc.tcp://127.0.0.1:{opcua_port}/",
                      "security": "Basic256Sha256", "mode": "SignAndEncrypt",
                      "server_fingerprint": found.group(1), "pki": str(tmp_path / "gw-pki"),
                      "username": "operator", "password": "s3cret"}
        state = asyncio.run(read_state(OpcUaConnection(**connection)))
        with pytest.raises(SecurityRejected, match="operator"):
            asyncio.run(read_state(OpcUaConnection(**{**connection, "password": "wrong"})))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert state in ("RUNNING", "IDLE", "ALARM")


async def read_state(connection: OpcUaConnection) -> Any:
    client = await open_client(connection, "cli-test")
    try:
        return await client.get_node("ns=2;s=Cnc.State").read_value()
    finally:
        await client.disconnect()


@pytest.mark.parametrize("option", ["--modbus-port", "--opcua-port"])
def test_a_port_in_use_is_one_line_naming_the_option(option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--modbus-port", "0", option, str(port)]
        result = subprocess.run([sys.executable, "-m", "simulators", *args], capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"port {port} is already in use" in line and option in line
