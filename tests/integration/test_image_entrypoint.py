"""The image's ENTRYPOINT + CMD and HEALTHCHECK, run outside Docker on the config the image
ships: the gateway starts, its health check answers healthy while the plant is not (no PLC,
no broker), `--plant` says unhealthy, and a stopped gateway is unhealthy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import free_port, wait_for
from tests.unit.test_deploy_files import ROOT, argument, production

pytestmark = pytest.mark.integration


def image_config(tmp_path: Path) -> tuple[Path, int]:
    """The config the Dockerfile copies to /etc/gateway/config.yaml, on free local ports."""
    [source] = [args.split()[0] for args in argument(production(), "COPY")
                if args.endswith(" /etc/gateway/config.yaml")]
    text = (ROOT / source).read_text()
    http = free_port()
    text = re.sub(r"listen: \S+", f"listen: 127.0.0.1:{http}", text)
    text = re.sub(r"port: 5020", f"port: {free_port()}", text)  # no PLC answers there
    text = text.replace("mqtt://127.0.0.1:1883", f"mqtt://127.0.0.1:{free_port()}")
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return config, http


def healthcheck(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    [check] = argument(production(), "HEALTHCHECK")
    argv = json.loads(check.split("CMD", 1)[1])
    assert argv[:2] == ["python", "/usr/local/lib/gateway-healthcheck.py"]
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "healthcheck.py"), *extra],
                          env={**os.environ, "GATEWAY_CONFIG": str(config)},
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def image_gateway(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[bytes]]]:
    config, http = image_config(tmp_path)
    entrypoint = json.loads(argument(production(), "ENTRYPOINT")[0])
    command = json.loads(argument(production(), "CMD")[0])
    command[command.index("--config") + 1] = str(config)
    assert entrypoint == ["gateway"]
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", *command], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield config, http, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


def test_the_image_command_runs_and_its_health_check_is_gateway_health(
        image_gateway: tuple[Path, int, subprocess.Popen[bytes]]) -> None:
    config, http, proc = image_gateway
    wait_for(lambda: healthcheck(config).returncode == 0, 60, "the health check passing")
    assert proc.poll() is None
    result = healthcheck(config)
    assert f"http://127.0.0.1:{http}/healthz" in result.stdout  # the port of the config
    plant = healthcheck(config, "--plant")
    assert plant.returncode == 1 and "503" in plant.stdout  # no PLC, no broker: plant unwell
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    stopped = healthcheck(config)
    assert stopped.returncode == 1 and "no answer" in stopped.stdout
