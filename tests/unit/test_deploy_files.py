"""The Dockerfile, deploy/compose.yaml and .dockerignore checked by parsing them (Docker does
not run here) against what an edge box needs: PLCs reachable, nothing published beyond
loopback, RTU allowed, a health check that reads the configured port, no demo-only packages
in the production image."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from runtime_requirements import DEMO_ONLY, requirement_name, runtime_requirements  # noqa: E402


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments), continuation lines joined, comments out."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            name = arguments.split(" AS ")[-1].strip() if " AS " in arguments else arguments
            current = stages.setdefault(name, [])
        current.append((instruction.upper(), arguments.strip()))
    return stages


def production() -> list[tuple[str, str]]:
    return list(dockerfile_stages().items())[-1][1]


def argument(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for inst, args in stage if inst == instruction]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    return data


def test_the_production_stage_is_the_last_and_named_as_compose_builds_it() -> None:
    assert list(dockerfile_stages())[-1] == "gateway"
    for name in ("gateway", "simulator"):
        assert compose()["services"][name]["build"]["target"] == "gateway"


def test_the_image_runs_as_a_user_in_dialout_for_modbus_rtu() -> None:
    stage = production()
    [user] = argument(stage, "USER")
    useradd = next(a for a in argument(stage, "RUN") if "useradd" in a)
    assert re.search(r"--groups\s+dialout", useradd)
    assert useradd.split("&&")[0].split()[-1] == user == "gateway"  # the user it runs as


def test_the_health_check_reads_the_port_from_the_config_not_a_fixed_8080() -> None:
    [check] = argument(production(), "HEALTHCHECK")
    assert "8080" not in check
    assert "gateway-healthcheck.py" in check and "--plant" not in check
    copied = " ".join(argument(production(), "COPY"))
    assert "deploy/healthcheck.py /usr/local/lib/gateway-healthcheck.py" in copied


def test_demo_only_packages_stay_out_of_the_production_image() -> None:
    runs = " ".join(argument(dockerfile_stages()["build"], "RUN"))
    assert "runtime_requirements.py" in runs and "--no-deps" in runs
    installs = " ".join(argument(production(), "RUN"))
    assert "-r /requirements.txt" in installs and "--no-deps" in installs
    kept = {requirement_name(r) for r in runtime_requirements(ROOT / "pyproject.toml")}
    assert not kept & DEMO_ONLY
    assert {"pymodbus", "asyncua", "paho-mqtt", "pydantic", "rich"} <= kept


def test_compose_publishes_every_port_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    assert "127.0.0.1:8080:8080" in compose()["services"]["gateway"]["ports"]


def test_the_gateway_reaches_the_host_and_the_simulator_service() -> None:
    services = compose()["services"]
    assert "host.docker.internal:host-gateway" in services["gateway"]["extra_hosts"]
    simulator = services["simulator"]
    assert simulator["entrypoint"] == ["python", "-m", "simulators"]
    assert simulator["command"][:2] == ["--host", "0.0.0.0"]
    port = int(simulator["command"][simulator["command"].index("--modbus-port") + 1])
    config = load_config(ROOT / "deploy" / "gateway.yaml",
                         {"INFLUX_TOKEN": "t", "GATEWAY_HTTP_TOKEN": "a-token-of-16-chars-or-more"})
    for device in config.devices:
        host = device.connection.host  # type: ignore[attr-defined]
        assert host in services or host == "host.docker.internal", host
        if host == "simulator":
            assert device.connection.port == port  # type: ignore[attr-defined]
    assert config.gateway.http.listen == "0.0.0.0:8080"  # reachable through the published port


def test_the_build_context_leaves_the_virtualenv_and_git_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "data", "tests"} <= ignored
    copied = [args.split()[0] for inst, args in
              (i for stage in dockerfile_stages().values() for i in stage)
              if inst == "COPY" and not args.startswith("--from")]
    for source in copied:  # nothing the Dockerfile needs is ignored
        assert source.split("/")[0] not in ignored, source


def test_the_entrypoint_and_command_are_exec_form_json() -> None:
    stage = production()
    assert json.loads(argument(stage, "ENTRYPOINT")[0]) == ["gateway"]
    assert json.loads(argument(stage, "CMD")[0])[:2] == ["run", "--config"]


def test_the_health_check_asks_the_configured_port_on_loopback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from healthcheck import listen_address

    config = tmp_path / "c.yaml"
    config.write_text("gateway: {http: {listen: '0.0.0.0:9123'}}\n")
    monkeypatch.delenv("GATEWAY_HTTP_LISTEN", raising=False)
    assert listen_address(str(config)) == "127.0.0.1:9123"
    assert listen_address(str(tmp_path / "missing.yaml")) == "127.0.0.1:8080"
    monkeypatch.setenv("GATEWAY_HTTP_LISTEN", "10.0.0.5:9000")
    assert listen_address(str(config)) == "10.0.0.5:9000"
